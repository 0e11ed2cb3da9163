"""The version, in a module of its own: the HTTP client's User-Agent and the build read it
without importing the package root (and so without its re-exports)."""

__version__ = "0.1.0"
