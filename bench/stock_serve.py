"""The bridge under gunicorn's own gthread worker: the unprotected baseline for bench/slow_clients.py.

    python bench/stock_serve.py --config FILE --port 9097 [--workers 2 --threads 4]

Everything as `python -m bridge serve` (bridge.server.run) but the worker class, which
is gunicorn's stock gthread instead of bridge.serving.worker.BufferingWorker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# This checkout's bridge, not whichever one is installed (as `python -m bridge` from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.config import load  # noqa: E402
from bridge.server import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    config = load(args.config)
    return run(args.config, config.storage.path, host="127.0.0.1", port=args.port, workers=args.workers,
               threads=args.threads, log_level="warning", worker_class="gthread")


if __name__ == "__main__":
    sys.exit(main())
