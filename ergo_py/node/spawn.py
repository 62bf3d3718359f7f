"""Remote spawn: asking a peer to start a process, and answering such requests.

Off until ``network.enable_spawn(name, factory, *nodes)`` names a factory (and,
optionally, the nodes that may use it). Every refusal is a reply
(``gen.ErrNameUnknown``, ``gen.ErrNotAllowed``), never a silent wait; a
request whose connection is lost fails at once with ``gen.ErrNoConnection``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from typing import Any, NamedTuple, Protocol

from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNameUnknown,
    ErrNoConnection,
    ErrNotAllowed,
)
from ergo_py.gen.identifiers import PID, Ref, random_ref_id
from ergo_py.gen.node import ActorFactory, NodeRouter, RemoteSpawnRequest, SpawnSpec
from ergo_py.gen.options import NetworkFlags, ProcessOptions
from ergo_py.net import frames as fr
from ergo_py.node.context import NodeContext

log = logging.getLogger(__name__)


class SpawnOwner(Protocol):
    """What remote spawn needs from the network backend."""

    def send_frame_from_loop(self, node: str, frame: fr.Frame) -> None:
        """Loop thread: write ``frame`` to ``node`` over the current connection."""

    def connect_from_loop(self, node: str) -> Awaitable[Any]:
        """Loop thread: the connection to ``node``, dialled if needed."""


class _Offer(NamedTuple):
    factory: ActorFactory
    nodes: frozenset[str] | None  # None: every node


class _Request(NamedTuple):
    node: str  # asked to spawn
    result: asyncio.Future[PID]


class RemoteSpawn:
    """The spawn requests this node made and the factories it offers."""

    def __init__(self, owner: SpawnOwner, router: NodeRouter, ctx: NodeContext) -> None:
        self._owner = owner
        self._router = router
        self._ctx = ctx
        self._lock = threading.Lock()
        self._pending: dict[Ref, _Request] = {}
        self._offered: dict[str, _Offer] = {}

    # --- what this node offers ------------------------------------------------------

    def enable(self, name: str, factory: ActorFactory, *nodes: str) -> None:
        with self._lock:
            self._offered[name] = _Offer(factory, frozenset(nodes) if nodes else None)

    def disable(self, name: str, *nodes: str) -> None:
        with self._lock:
            entry = self._offered.get(name)
            if entry is None:
                return
            if not nodes:
                del self._offered[name]
            elif entry.nodes is None:
                raise ErrIncorrect(
                    f"{name!r} is enabled for every node; disable it entirely, then re-enable"
                )
            else:
                self._offered[name] = _Offer(entry.factory, entry.nodes - frozenset(nodes))

    @property
    def allowed(self) -> bool:
        """Whether this node takes remote spawn requests at all (its network flags)."""
        return bool(self._ctx.net.flags & NetworkFlags.ENABLE_REMOTE_SPAWN)

    def offer(self, peer: str, name: str) -> ActorFactory:
        """The factory ``peer`` may spawn as ``name`` (else ErrNotAllowed, ErrNameUnknown)."""
        entry = self._offered.get(name)
        if not self.allowed:
            raise ErrNotAllowed(f"remote spawn is switched off on {self._ctx.name}")
        if entry is None:
            raise ErrNameUnknown(f"{name!r} is not enabled for remote spawn")
        if entry.nodes is not None and peer not in entry.nodes:
            raise ErrNotAllowed(f"{peer} may not spawn {name!r} on {self._ctx.name}")
        return entry.factory

    def requested(self, f: fr.SpawnRequest) -> None:
        """Loop thread: answer a request at once when refused, else spawn off the loop."""
        try:
            factory = self.offer(str(f.from_.node), f.factory)
        except ErgoError as exc:
            self._reply(f, None, exc)
            return
        self._ctx.lt.spawn(self._spawn_and_reply(f, factory))

    async def _spawn_and_reply(self, f: fr.SpawnRequest, factory: ActorFactory) -> None:
        """Spawn off the loop (an actor's init may take its time), then answer."""
        options = ProcessOptions(link_parent=f.link_parent, env=dict(f.env))
        # The args were just decoded off the wire: nobody else holds them, no copy needed.
        spec = SpawnSpec(factory, tuple(f.args), options, f.register or None)
        try:
            pid = await asyncio.get_running_loop().run_in_executor(
                None, self._router.route_spawn, f.from_, spec
            )
        except Exception as exc:
            self._reply(f, None, exc)
        else:
            self._reply(f, pid, None)

    def _reply(self, f: fr.SpawnRequest, pid: PID | None, error: BaseException | None) -> None:
        try:
            self._owner.send_frame_from_loop(
                f.from_.node, fr.SpawnResult(f.from_, f.ref, pid, error)
            )
        except ErgoError as exc:
            log.info("%s: spawn result for %s not sent: %s", self._ctx.name, f.from_, exc)

    # --- what this node asks for ------------------------------------------------------

    def spawn(self, from_pid: PID, order: RemoteSpawnRequest) -> PID:
        """Any thread: ask ``order.node`` to spawn ``order.name``; its PID or the peer's refusal."""
        node = order.node
        ref = Ref(self._ctx.name, random_ref_id(), self._ctx.creation)

        async def request() -> PID:
            fut: asyncio.Future[PID] = asyncio.get_running_loop().create_future()
            self._pending[ref] = _Request(node, fut)
            try:
                await self._owner.connect_from_loop(node)
                frame = fr.SpawnRequest(
                    from_pid,
                    ref,
                    order.name,
                    order.register,
                    order.args,
                    order.options.link_parent,
                    order.options.env,
                )
                self._owner.send_frame_from_loop(node, frame)
                return await fut
            finally:
                self._pending.pop(ref, None)

        return self._ctx.lt.run(request(), timeout=self._ctx.net.connect_timeout + 15.0)

    def result(self, f: fr.SpawnResult, peer: str) -> None:
        """Loop thread: the answer to one of our requests (only ``peer``, who was asked, may)."""
        entry = self._pending.get(f.ref)
        if entry is None or entry.node != peer:
            return
        del self._pending[f.ref]
        fut = entry.result
        if fut.done():
            return
        if f.pid is not None:
            fut.set_result(f.pid)
        else:
            err = f.error if isinstance(f.error, BaseException) else ErrNotAllowed(str(f.error))
            fut.set_exception(err)

    def connection_lost(self, peer: str) -> None:
        """Loop thread: every request to ``peer`` fails now."""
        for request in list(self._pending.values()):
            if request.node == peer and not request.result.done():
                request.result.set_exception(ErrNoConnection(f"connection to {peer} lost"))
