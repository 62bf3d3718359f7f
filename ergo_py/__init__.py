"""ergo_py: Ergo-style distributed actor nodes with live mTLS certificate rotation."""

from ergo_py._version import __version__

__all__ = ["__version__"]
