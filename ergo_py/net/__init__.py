"""The wire: term codec, handshake and framing (sans-IO), transport, registrars."""

from ergo_py.net.registrar import EmbeddedRegistrar, Registrar

__all__ = ["EmbeddedRegistrar", "Registrar"]
