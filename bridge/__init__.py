"""feishu-alert-bridge: Alertmanager and Grafana webhooks in, Feishu/Lark cards out."""

from ._version import __version__


def create_app(*args, **kwargs):
    # Imported lazily so that `import bridge` (the CLI, the version lookup at build
    # time) does not pull in Flask.
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["__version__", "create_app"]
