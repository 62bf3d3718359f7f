"""The user's face of the network: ``node.network()``, a ``gen.Network`` and nothing more.

The backend behind it also carries the node's own traffic (``send``,
``call``, ``stop``, ...); users get this view, so none of that is in reach.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ergo_py.gen.errors import ErrIncorrect, ErrNoConnection
from ergo_py.gen.identifiers import PID, Atom
from ergo_py.gen.node import AcceptorInfo, ActorFactory, Network, RemoteNode, RemoteSpawnRequest
from ergo_py.gen.options import ProcessOptions
from ergo_py.gen.registrar import Registrar
from ergo_py.net.linkbase import TLSDetails

if TYPE_CHECKING:
    from ergo_py.node.network import TCPBackend

# Shown per link only: the connection's own figures are their sums.
PER_LINK_ONLY = frozenset({"address", "messages_in", "messages_out"})


class NetworkView(Network):
    """``gen.Network`` over a node's TCP backend (thread-safe, as the backend is)."""

    def __init__(self, backend: TCPBackend) -> None:
        self._backend = backend

    def get_node(self, name: str) -> RemoteNode:
        ergo = self._backend.ergo_connection(name)
        if ergo is not None:
            return _RemoteNode(self._backend, ergo.peer, ergo.info.creation)
        conn = self._backend.connection(name)
        return _RemoteNode(self._backend, conn.peer, conn.handshake.peer_creation)

    def nodes(self) -> list[str]:
        return self._backend.peers()

    def info(self, name: str) -> dict[str, Any]:
        ergo = self._backend.ergo_info(name)
        if ergo is not None:
            return ergo
        conn = self._backend.current(name)
        if conn is None:
            raise ErrNoConnection(f"not connected to {name}")
        links = [link_info(link) for link in conn.links]
        first = links[0]  # the link the handshake made; joins may be on newer certs
        return {
            "peer": conn.peer,
            "peer_creation": conn.handshake.peer_creation,
            "peer_version": conn.handshake.peer_version,
            "connection_id": conn.handshake.connection_id,
            "dialed": conn.dialed,
            "identity_verified": self._backend.identity_verified(
                conn, first["peer_cert_fingerprint"]
            ),
            **{k: v for k, v in first.items() if k not in PER_LINK_ONLY},
            "pool_links": len(conn.links),
            "links": links,
            "messages_in": sum(link["messages_in"] for link in links),
            "messages_out": sum(link["messages_out"] for link in links),
        }

    def add_route(self, match: str, route: Any, weight: int = 0) -> None:
        self._backend.add_route(match, route, weight)

    def remove_route(self, match: str) -> None:
        self._backend.remove_route(match)

    def disconnect(self, name: str) -> None:
        self._backend.disconnect(name)

    def reconnect(self, name: str) -> None:
        self._backend.reconnect(name)

    def acceptors(self) -> list[AcceptorInfo]:
        return self._backend.acceptors()

    def enable_spawn(self, name: str, factory: ActorFactory, *nodes: str) -> None:
        self._backend.enable_spawn(name, factory, *nodes)

    def disable_spawn(self, name: str, *nodes: str) -> None:
        self._backend.disable_spawn(name, *nodes)

    def registrar(self) -> Registrar | None:
        return self._backend.registrar()

    def __repr__(self) -> str:
        return f"<Network of {self._backend.core_pid.node}>"


class _Link(Protocol):
    """What ``link_info`` reads of a link (ours or an Ergo one)."""

    tls: TLSDetails | None
    peer_address: Any
    messages_in: int
    messages_out: int


def link_info(link: _Link) -> dict[str, Any]:
    """One link's TLS and traffic figures, as ``Network.info`` shows them."""
    tls = link.tls
    local = tls.local_state if tls else None
    peer = tls.peer if tls else None
    return {
        "address": link.peer_address,
        "tls_version": tls.version if tls else None,
        "cipher": tls.cipher if tls else None,
        "local_cert_fingerprint": local.certificate.fingerprint if local else None,
        "local_cert_version": local.version if local else None,
        "peer_cert_fingerprint": peer.fingerprint if peer else None,
        "peer_cert_subject": peer.subject if peer else None,
        "peer_cert_not_after": peer.not_after if peer else None,
        "messages_in": link.messages_in,
        "messages_out": link.messages_out,
    }


def _node_spawn_options(options: ProcessOptions | None) -> ProcessOptions:
    if options is not None and options.link_parent:
        raise ErrIncorrect(
            "a node is not a process and cannot be linked: use Actor.spawn_remote to spawn "
            "a child linked to the calling process"
        )
    return options or ProcessOptions()


class _RemoteNode(RemoteNode):
    """A peer as ``get_node`` found it connected (in either dialect)."""

    def __init__(self, backend: TCPBackend, peer: str, creation: int) -> None:
        self._backend = backend
        self._peer = peer
        self._name = Atom(peer)  # fixed for the connection's life
        self._creation = creation

    def spawn(self, name: str, *args: Any, options: ProcessOptions | None = None) -> PID:
        options = _node_spawn_options(options)
        order = RemoteSpawnRequest(self._peer, name, args, options)
        return self._backend.spawn(self._backend.core_pid, order)

    def spawn_register(
        self, register: str, name: str, *args: Any, options: ProcessOptions | None = None
    ) -> PID:
        """Spawn ``name`` on the peer and register the process there as ``register``."""
        options = _node_spawn_options(options)
        order = RemoteSpawnRequest(self._peer, name, args, options, register)
        return self._backend.spawn(self._backend.core_pid, order)

    def disconnect(self) -> None:
        self._backend.disconnect(self._peer)
