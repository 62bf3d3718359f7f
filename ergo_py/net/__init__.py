"""The wire: term codec, handshake and framing (sans-IO), transport, registrars."""

from ergo_py.net.registrar import EmbeddedRegistrar, EtcdRegistrar, Registrar

__all__ = ["EmbeddedRegistrar", "EtcdRegistrar", "Registrar"]
