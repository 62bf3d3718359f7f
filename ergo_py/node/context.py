"""The facts about one node that the network backend's parts are all made with.

``TCPBackend`` (``node/network.py``) builds one :class:`NodeContext` when it
assembles the node's network and hands it to each part (the connection
table, dialer, admission, acceptors, remote spawn, the Ergo wire, the trust
keeper), which reads what it needs off it instead of being given the same
six arguments one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.options import NetworkOptions
from ergo_py.net.loop import LoopThread

__all__ = ["NodeContext"]


@dataclass(frozen=True, slots=True)
class NodeContext:
    """Who the node is and what its network runs on; fixed for the node's life."""

    name: str  # the node's name, as a str
    creation: int
    cookie: str  # the node's cookie (an acceptor may have its own: AcceptorOptions.cookie)
    net: NetworkOptions
    cert_manager: CertManager | None  # None: no TLS
    lt: LoopThread  # the node's loop thread: all network I/O runs on it

    @property
    def dial_budget(self) -> float:
        """How long a caller waits for a dial: connect, TLS and handshake, with margin."""
        return self.net.connect_timeout + 2 * self.net.handshake_timeout + 5.0
