"""Testing only: a bridge process started with this directory first on PYTHONPATH keeps
Feishu's minute window FEISHU_BRIDGE_TEST_MINUTE seconds long instead of 60.

Python imports `sitecustomize` at start-up, before `python -m bridge serve` runs, so the
shorter window is in place before gunicorn forks a worker. The one real-time burst test
uses it (with the fake Feishu's minute as short) to exercise the minute window three
times in seconds instead of minutes.

Why this and not a setting: the bridge gets no knob that could loosen Feishu's limits in
production, neither in its configuration nor in its environment; what a test changes is
a constant, from outside, in a process only the test starts. PYTHONPATH must also hold
the checkout (ahead of any installed copy), since this imports `bridge` early.
"""

import os
import sys

from bridge.delivery import pacing

# Before bridge.server has pointed prometheus_client at its multiprocess directory,
# nothing may import it (bridge.server.prepare_metrics_dir): importing bridge.delivery
# does not, and this keeps it so.
assert "prometheus_client" not in sys.modules, "bridge.delivery imports prometheus_client"
pacing.FEISHU_WINDOWS = pacing.Windows(minute=float(os.environ["FEISHU_BRIDGE_TEST_MINUTE"]))
