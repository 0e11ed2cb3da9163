"""feishu-alert-bridge: Alertmanager and Grafana webhooks in, Feishu/Lark cards out."""

from ._version import __version__

# bridge.web imports Flask only when an app is built, so `import bridge` (the CLI, the
# version lookup at build time, the preview's sandbox) stays light.
from .web import create_app  # noqa: E402

__all__ = ["__version__", "create_app"]
