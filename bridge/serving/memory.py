"""Freed memory back to the system (glibc's malloc), so that a worker's size after a large
request is what it still holds, not the most it ever needed.

Measured with bench/big_bodies.py and tests/test_memory_bound.py: after a 5 MiB body a
worker kept 17 to 24 MiB of it. glibc returns free pages inside its heaps only when
malloc_trim asks; with a trim after each large request the worker kept 5 MiB when the
request had been handled in glibc's main arena, and 14 MiB when in a second one, which
malloc_trim shrinks less. So a worker has one arena: its threads allocate under the GIL
anyway, and bench/accept.py showed no rate lost. Fixing glibc's mmap threshold instead
(large blocks always their own mappings) returned no more and cost a quarter of the accept
rate (1 180 against 1 610 req/s). On other C libraries (musl) all this does nothing.
"""

from __future__ import annotations

import ctypes
import os

MALLOC_ARENAS = 1
_M_ARENA_MAX = -8             # glibc malloc.h


def _libc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_malloc() -> None:
    """What MALLOC_ARENA_MAX=1 does, for the master and (through fork) every worker; an
    explicit MALLOC_ARENA_MAX in the environment wins.

    glibc gives threads that allocate at the same time arenas of their own, up to eight
    per core: a worker's handler and sender threads each left a partly used one behind
    (a few MiB per worker), and a second arena is one malloc_trim returns less of (above).
    """
    libc = _libc()
    if libc is None:
        return   # not glibc: nothing to tune
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def trim() -> None:
    """Return the free pages of every arena to the system (malloc_trim(0))."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
