"""Connections spread over the workers (issue 15): the workers share one listening socket, and
a client's few kept-alive connections used to land on whichever worker ran first, often all
on one (one process, one core, for everything)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import requests

from procs import BridgeProcess
from support import eventually
from test_delivery_service import NO_PROXY, bot, write_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from benchlib import children, connections  # noqa: E402  (the benchmark's own /proc readers)


def test_a_clients_connections_spread_evenly_over_the_workers(fake_feishu, tmp_path):
    config = write_config(tmp_path, [bot("ops", fake_feishu.add_bot("tok-balance-3c1d"))])
    bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=2, threads=4)
    try:
        workers = eventually(lambda: len(children(bridge.proc.pid)) == 2 and children(bridge.proc.pid), 20,
                             "both workers up")
        # Until both workers serve (one may still be loading the app when /-/ready answers) ...
        eventually(lambda: sorted(_spread(bridge.port, workers).values()) == [4, 4], 20, "a worker serving")
        for trial in range(5):   # ... then every time
            held = _spread(bridge.port, workers)
            assert sorted(held.values()) == [4, 4], f"trial {trial}: {held}"
        # A lone request is not held back by the yielding.
        started = time.monotonic()
        assert requests.get(f"{bridge.url}/-/healthy", timeout=5, proxies=NO_PROXY).status_code == 200
        assert time.monotonic() - started < 0.5
    finally:
        bridge.stop()
        assert os.path.exists(tmp_path / "bridge.log")


def _spread(port: int, workers: list[int]) -> dict[int, int]:
    """Open 8 connections at once (as wrk and an Alertmanager's HTTP client open theirs);
    how many each worker took."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        return eventually(lambda: sum(connections(workers, port).values()) == 8 and connections(workers, port), 5,
                          "all 8 connections accepted")
    finally:
        for s in socks:
            s.close()
        time.sleep(0.2)
