"""Actor behaviours built on pykka: subclass ``Actor``."""

from ergo_py.act.actor import Actor, ProcessHost

__all__ = ["Actor", "ProcessHost"]
