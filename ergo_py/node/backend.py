"""The network backend used when the network is disabled, and backend selection.

With ``NetworkMode.DISABLED`` every operation on another node fails with
``gen.ErrNoConnection``: sends, calls, links, monitors, spawns, exits.
"""

from __future__ import annotations

from typing import Any

from ergo_py.gen.errors import ErrNoConnection
from ergo_py.gen.identifiers import PID, Ref
from ergo_py.gen.node import (
    Network,
    NetworkBackend,
    NodeRouter,
    RemoteNode,
    RemoteSpawnRequest,
    RemoteTarget,
)
from ergo_py.gen.options import NetworkMode, NodeOptions


def _unreachable(node: object) -> ErrNoConnection:
    return ErrNoConnection(f"no connection to {node}: the network is disabled")


class DisabledNetwork(Network):
    """``node.network()`` of a node without a network."""

    def get_node(self, name: str) -> RemoteNode:
        raise _unreachable(name)

    def nodes(self) -> list[str]:
        return []

    def info(self, name: str) -> Any:
        raise _unreachable(name)

    def add_route(self, match: str, route: Any, weight: int = 0) -> None:
        raise _unreachable(match)

    def disconnect(self, name: str) -> None:
        raise _unreachable(name)


class DisabledBackend(NetworkBackend):
    """Every remote operation raises ``ErrNoConnection``; nothing ever arrives."""

    def __init__(self, router: NodeRouter) -> None:
        self._router = router
        self._network = DisabledNetwork()

    def send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        raise _unreachable(to.node)

    def call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        raise _unreachable(to.node)

    def reply(
        self, from_pid: PID, to: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        raise _unreachable(to.node)

    def link(self, from_pid: PID, target: RemoteTarget) -> None:
        raise _unreachable(target.node)

    def unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        raise _unreachable(target.node)

    def monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        raise _unreachable(target.node)

    def demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        raise _unreachable(target.node)

    def exit(
        self, from_target: RemoteTarget, to: PID, reason: Any, ended: PID | None = None
    ) -> None:
        raise _unreachable(to.node)

    def down(
        self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any, ended: PID | None = None
    ) -> None:
        raise _unreachable(to.node)

    def spawn(self, from_pid: PID, order: RemoteSpawnRequest) -> PID:
        raise _unreachable(order.node)

    def connect(self, node: str) -> None:
        raise _unreachable(node)

    def network(self) -> Network:
        return self._network

    def stop(self) -> None:
        return None


def default_backend(router: NodeRouter, options: NodeOptions) -> NetworkBackend:
    """The disabled backend for ``NetworkMode.DISABLED``, the TCP one otherwise."""
    if options.network.mode == NetworkMode.DISABLED:
        return DisabledBackend(router)
    # Imported here: a node without a network does not load asyncio and the network stack.
    from ergo_py.node.network import create_backend

    return create_backend(router, options)
