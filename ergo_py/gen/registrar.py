"""How nodes find each other: ``Route`` and the registrar protocol (Ergo's gen/registrar.go).

``gen.Route`` is what a registrar knows of a node: where it accepts
connections. ``Registrar`` is the protocol every registrar implements: the
embedded one (``ergo_py.net.registrar``), a registry such as etcd, or the
user's own; users meet it as ``ergo_py.net.Registrar``. It is declared here,
in ``gen``, so that ``gen.NetworkOptions.registrar`` can name it without
``gen`` importing ``net``; the node talks to its registrar through it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from ergo_py.gen.errors import ErrIncorrect

MAX_HOST_BYTES: Final = 255


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a node accepts connections, as a registrar hands it out.

    ``host`` empty means "the host part of the node's name". ``tls`` says
    whether the acceptor speaks TLS; no certificate data travels here.
    Constructing a Route with a bad field raises ``gen.ErrIncorrect``.
    """

    host: str
    port: int
    tls: bool = False
    handshake_version: int = 1
    proto_version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or len(self.host.encode("utf-8")) > MAX_HOST_BYTES:
            raise ErrIncorrect(f"route host must be a str of at most {MAX_HOST_BYTES} bytes")
        if not _is_int(self.port) or not 0 < self.port < 65536:
            raise ErrIncorrect(f"route port must be in 1..65535, got {self.port!r}")
        if not isinstance(self.tls, bool):
            raise ErrIncorrect(f"route tls must be a bool, got {self.tls!r}")
        for field_name in ("handshake_version", "proto_version"):
            value = getattr(self, field_name)
            if not _is_int(value) or not 0 <= value < 2**32:
                raise ErrIncorrect(f"route {field_name} must be in 0..2**32-1, got {value!r}")


@runtime_checkable
class Registrar(Protocol):
    """Where a node publishes its routes and looks up other nodes' (``net.Registrar``).

    One object serves one node: pass a fresh one in each node's
    ``gen.NetworkOptions.registrar`` (several may share a backing store).

    What the node does with it: if it accepts connections, ``start`` once
    with its own routes when its acceptors listen; ``resolve`` whenever it
    dials a node that no static route matches; ``close`` once when it stops.
    A hidden node never calls ``start`` but still resolves, and so does a
    node whose ``start`` failed: ``resolve`` must work either way.

    Threads: the coroutines run on the node's event loop and must not block
    it; ``nodes`` may be called from any thread. Errors are ``gen.ErgoError``
    subclasses, named below. A registrar may offer more (a watch of joins and
    leaves, configuration); the node needs only these four.
    """

    async def start(self, node_name: str, routes: Sequence[Route]) -> None:
        """Register ``node_name`` as reachable at ``routes`` until ``close``.

        Raises ``gen.ErrTaken`` if a live node holds the name already (the
        node then refuses to start), and so does ``gen.NodeError`` (a registrar
        that must not run without its registry: ``net.EtcdRegistrar`` when etcd
        is unreachable); any other ``gen.ErgoError`` (registry unreachable, say)
        is logged and the node runs unregistered.
        """
        ...

    async def resolve(self, node_name: str) -> list[Route]:
        """Where ``node_name`` accepts connections, best first.

        Raises ``gen.ErrNoRoute`` if it is not registered, and
        ``gen.ErrNoConnection`` or ``gen.ErrTimeout`` if the registry could
        not be asked, each in bounded time.
        """
        ...

    def nodes(self) -> list[str]:
        """The names registered, as this registrar sees them now, sorted.

        No I/O: a snapshot of what the registrar already holds. Raises
        ``gen.ErrUnsupported`` if it cannot list the cluster.
        """
        ...

    async def close(self) -> None:
        """Withdraw the registration, if any, and release everything; idempotent.

        Called when the node stops, whether ``start`` was called, and
        whether it succeeded, or not.
        """
        ...
