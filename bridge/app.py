from .web import create_app  # noqa: F401  (the app factory's old path: `from bridge.app import create_app`)
