"""The wire: term codec, handshake and framing (sans-IO), transport, registrars."""

from ergo_py.net.registrar import (
    EmbeddedRegistrar,
    EtcdRegistrar,
    EtcdTrust,
    Registrar,
    publish_trust,
)

__all__ = ["EmbeddedRegistrar", "EtcdRegistrar", "EtcdTrust", "Registrar", "publish_trust"]
