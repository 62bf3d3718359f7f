"""Remote spawn with Go Ergo nodes, both ways (``MessageSpawn``, answered by ``MessageResult``).

Ours to Go: ``network.get_node(go).spawn(name, *args)`` (or an actor's
``spawn_remote``) sends one request and waits for its answer; a Go node
whose handshake did not offer remote spawn is refused at once with
``gen.ErrNotAllowed``, as Go's own ``RemoteSpawn`` does. Go's to us: the
factories ``network.enable_spawn`` names, with the same checks as for our
own protocol (``node/spawn.py``); our handshake offers remote spawn only
when ``NetworkFlags.ENABLE_REMOTE_SPAWN`` is set. Every refusal is an
answer with Ergo's typed error (``gen.ErrNameUnknown``, ``gen.ErrNotAllowed``),
never a silent wait (Ergo itself answers nothing when spawn is switched
off; a peer that asks anyway gets ``ErrNotAllowed`` from us).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

from ergo_py.gen.errors import ErgoError, ErrNoConnection, ErrNotAllowed, ErrTimeout
from ergo_py.gen.identifiers import PID, Ref
from ergo_py.gen.node import ActorFactory, NodeRouter, RemoteSpawnRequest, SpawnSpec
from ergo_py.gen.options import ProcessOptions
from ergo_py.net.ergo import enp
from ergo_py.net.ergo.edf import RemoteError
from ergo_py.net.ergo.handshake import FLAG_REMOTE_SPAWN
from ergo_py.net.ergo.spawn import SpawnRequest, spawn_request
from ergo_py.node.context import NodeContext
from ergo_py.node.ergo_pool import Wire
from ergo_py.node.spawn import RemoteSpawn

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 15.0  # how long a spawn request waits for the Go node's answer


class ErgoSpawn:
    """Spawn requests to and from Go nodes: ours waiting for answers, theirs being served."""

    def __init__(
        self, wire: Wire, router: NodeRouter, offers: RemoteSpawn, ctx: NodeContext
    ) -> None:
        self._wire = wire
        self._router = router
        self._offers = offers
        self._ctx = ctx
        self._lock = threading.Lock()
        self._pending: dict[Ref, tuple[str, concurrent.futures.Future[enp.Result]]] = {}

    @property
    def flags(self) -> int:
        """Our handshake's remote-spawn flag (Ergo's EnableRemoteSpawn)."""
        return FLAG_REMOTE_SPAWN if self._offers.allowed else 0

    # --- ours to Go (process threads) ------------------------------------------------

    def spawn(self, from_pid: PID, order: RemoteSpawnRequest) -> PID:
        conn = self._wire.connection(order.node)
        if not conn.info.flags & FLAG_REMOTE_SPAWN:
            raise ErrNotAllowed(f"{order.node} does not take remote spawn requests")
        ref = self._wire.new_ref()
        answer: concurrent.futures.Future[enp.Result] = concurrent.futures.Future()
        with self._lock:
            self._pending[ref] = (order.node, answer)
        try:
            request = spawn_request(
                order.name,
                from_pid,
                ref,
                order.args,
                register=order.register,
                env=order.options.env,
                link_parent=order.options.link_parent,
            )
            self._wire.write(conn, conn.codec.control(request, enp.order_of(from_pid.id)))
            try:
                result = answer.result(timeout=ANSWER_TIMEOUT)
            except concurrent.futures.TimeoutError as exc:
                raise ErrTimeout(f"{order.node} did not answer a spawn of {order.name!r}") from exc
        finally:
            with self._lock:
                self._pending.pop(ref, None)
        error = result.error
        if error is not None:
            raise error if isinstance(error, BaseException) else RemoteError(str(error))
        if not isinstance(result.result, PID):
            raise RemoteError(f"{order.node} answered a spawn with {result.result!r}, not a PID")
        return result.result

    def answered(self, result: enp.Result, peer: str) -> bool:
        """Loop thread: whether ``result`` answers one of our requests (to ``peer``)."""
        with self._lock:
            pending = self._pending.get(result.ref)
            if pending is None or pending[0] != peer:
                return False
            del self._pending[result.ref]
        pending[1].set_result(result)
        return True

    def connection_lost(self, peer: str) -> None:
        """Loop thread: our requests to ``peer`` fail now, not at their timeout."""
        with self._lock:
            lost = [(r, p) for r, p in self._pending.items() if p[0] == peer]
            for ref, _ in lost:
                del self._pending[ref]
        for _, (_, answer) in lost:
            answer.set_exception(ErrNoConnection(f"connection to {peer} lost"))

    # --- Go's to us (loop thread) ----------------------------------------------------

    def requested(self, peer: str, request: SpawnRequest) -> None:
        try:
            factory = self._offers.offer(peer, str(request.name))
        except ErgoError as exc:
            self._answer(peer, request, None, exc)
            return
        self._ctx.lt.spawn(self._spawn_and_answer(peer, request, factory))

    async def _spawn_and_answer(
        self, peer: str, request: SpawnRequest, factory: ActorFactory
    ) -> None:
        """Spawn off the loop (an actor's init may take its time), then answer."""
        extra = request.options
        options = ProcessOptions(
            link_parent=extra.options.link_parent,
            env={**extra.parent_env, **extra.options.env},
        )
        args: tuple[Any, ...] = tuple(extra.args or ())
        register = str(extra.register) or None
        spec = SpawnSpec(factory, args, options, register)
        try:
            pid = await asyncio.get_running_loop().run_in_executor(
                None, self._router.route_spawn, extra.parent_pid, spec
            )
        except Exception as exc:
            self._answer(peer, request, None, exc)
        else:
            self._answer(peer, request, pid, None)

    def _answer(
        self, peer: str, request: SpawnRequest, pid: PID | None, error: BaseException | None
    ) -> None:
        order = enp.order_of(request.options.parent_pid.id)  # as Go answers: the parent's order
        try:
            conn = self._wire.connection(peer, from_loop=True)
            result = enp.Result(error, pid, request.ref)
            try:
                data = conn.codec.control(result, order)
            except ErgoError as exc:  # an error that cannot be encoded: its text
                data = conn.codec.control(
                    enp.Result(RemoteError(str(exc)), None, request.ref), order
                )
            self._wire.write(conn, data, from_loop=True)
        except ErgoError as exc:
            log.info("%s: spawn answer to %s not sent: %s", self._ctx.name, peer, exc)
