"""Freed memory back to the system (glibc's malloc), so that a worker's size after a large
request is what it still holds, not the most it ever needed.

Measured with bench/big_bodies.py: after a body near the limit a worker kept most of its
peak. Two things held it: glibc raises its mmap threshold to the size of each large
block freed (up to 32 MiB), so the next body-sized buffers come from the heap, where a
small block still in use above them keeps the whole span; and free pages inside the heap
are not returned until malloc_trim asks. On other C libraries (musl) all this does nothing.
"""

from __future__ import annotations

import ctypes
import os

MALLOC_ARENAS = 2
# glibc's initial threshold, fixed: a block this large or larger always gets its own
# mapping, which free() unmaps at once.
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3        # glibc malloc.h
_M_ARENA_MAX = -8


def _libc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_malloc() -> None:
    """For the master and (through fork) every worker: at most MALLOC_ARENAS arenas, and a
    fixed mmap threshold. An explicit MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ in the
    environment wins.

    glibc gives threads that allocate at the same time arenas of their own, up to eight
    per core, and a worker's handler and sender threads each left a partly used one
    behind: a few MiB per worker for no speed we could measure.
    """
    libc = _libc()
    if libc is None:
        return   # not glibc: nothing to tune
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim() -> None:
    """Return the free pages of every arena to the system (malloc_trim(0))."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
