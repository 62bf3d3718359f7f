"""The TCP/TLS network backend: wires the parts together and carries the traffic.

The parts, one job each: ``node/acceptor.py`` listens and admits,
``node/admission.py`` decides who may connect (both ways),
``node/dialer.py`` finds and dials peers (routes, pools, reconnects),
``node/connections.py`` keeps the connection table (closing, hand-over),
``node/spawn.py`` does remote spawn, ``node/network_view.py`` is the user's
``gen.Network``. What stays here is the frame traffic itself: the write path
from process threads and the dispatch of what arrives.

All network I/O runs on the node's loop thread (``net.loop.LoopThread``).
Process threads call the ``NetworkBackend`` methods: they encode the frame on
their own thread (so ``ErrTooLarge`` / ``ErrUnsupportedType`` reach the
sender), find or make the connection (waiting at most the connect plus
handshake timeouts), and queue the bytes on a link's batched writer. Frames
that arrive are turned into ``NodeRouter`` calls on the loop thread; those only
queue work for processes.

Ordering: every frame for one (sender, recipient) pair travels on the same
link, chosen by the sender's order byte, so it arrives in order.

Lifetimes: the backend owns the loop thread, the acceptors and every link;
``stop()`` closes them all. Losing a link ends its connection: exits and
downs fire for the peer's processes and pending calls fail at once with
``gen.ErrNoConnection``; the next send dials again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import string
import threading
from typing import Any

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoConnection,
    ErrTaken,
    ErrTimeout,
    ErrUnsupported,
    HandshakeRejected,
    NodeError,
)
from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref
from ergo_py.gen.node import (
    AcceptorInfo,
    Network,
    NetworkBackend,
    NodeRouter,
    RemoteSpawnRequest,
    RemoteTarget,
)
from ergo_py.gen.options import (
    POOL_GROW_AFTER,
    PROTOCOL_ERGO,
    PROTOCOLS,
    AcceptorOptions,
    NetworkMode,
    NodeOptions,
)
from ergo_py.gen.registrar import Registrar, Route
from ergo_py.net import frames as fr
from ergo_py.net.handshake import AdmissionEvent, HandshakeComplete, JoinComplete
from ergo_py.net.link import LinkProtocol
from ergo_py.net.loop import LoopThread, wait_until
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.registrar import EmbeddedRegistrar
from ergo_py.net.writer import BatchWriter
from ergo_py.node.acceptor import Acceptor
from ergo_py.node.admission import Admission
from ergo_py.node.connections import Connection, ConnectionTable, ConnState
from ergo_py.node.dialer import Dialer
from ergo_py.node.ergo_pool import ErgoConnection
from ergo_py.node.ergo_wire import ErgoWire
from ergo_py.node.network_view import NetworkView
from ergo_py.node.observe import Observer
from ergo_py.node.spawn import RemoteSpawn
from ergo_py.node.trust import TrustKeeper

log = logging.getLogger(__name__)
# Lines a peer can cause (undeliverable frames, refusals, failed dials): per
# kind, a few pass and the rest are counted (see net.ratelog).
_limited = LogLimiter(log)

_CURRENT = ConnState.CURRENT  # the write path's check, without the class attribute look-up
_send_run = fr.send_run

# The call frame type for each kind of callee.
_CALL_CODES = {PID: fr.TYPE_CALL_PID, ProcessID: fr.TYPE_CALL_NAME, Alias: fr.TYPE_CALL_ALIAS}


def create_backend(router: NodeRouter, options: NodeOptions) -> NetworkBackend:
    """The node's backend for ``NetworkMode.ENABLED`` and ``HIDDEN``."""
    backend = TCPBackend(router, options)
    backend.start()
    return backend


def failure_reason(exc: BaseException) -> str:
    """A short, bounded label for why a handshake failed (metrics)."""
    if isinstance(exc, HandshakeRejected):
        return f"rejected: {exc.reason}"[:48]
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls: certificate"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, TimeoutError | ErrTimeout):
        return "timeout"
    if isinstance(exc, ErrNoConnection) and "TLS" in str(exc):
        return "tls: certificate" if "certificate" in str(exc) else "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError):
        return "network"
    if isinstance(exc, ErrTaken):
        return "taken"
    return type(exc).__name__


def _random_cookie() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


class TCPBackend(NetworkBackend):
    """Connections to other nodes over TCP, with TLS when a cert manager is set."""

    def __init__(self, router: NodeRouter, options: NodeOptions) -> None:
        self._router = router
        self._name = str(router.name)
        self._creation = router.creation
        self._options = options
        net = options.network
        self._net = net
        if not net.cookie:
            net.cookie = _random_cookie()
            log.warning("%s: no cookie set; using a random one", self._name)
        self._cookie = net.cookie
        self._cm: CertManager | None = options.cert_manager
        if net.insecure_skip_verify:
            log.warning("%s: insecure_skip_verify is on: peers are not verified", self._name)
        self._lt = LoopThread(self._name)
        self._table = ConnectionTable(self, self._name, net, self._lt)
        self._conns = self._table.conns  # the write path's look-up, one attribute away
        self._owing = self._table.owing
        self._encoder = fr.FrameEncoder()  # this node's identifier caches: shared with no other
        # Refs of calls each peer made that are not answered yet (sets: one
        # add or discard is atomic, from the loop or any process thread).
        self._owed: dict[str, set[Ref]] = {}
        self._acceptors: list[Acceptor] = []
        self._registrar_lock = threading.Lock()
        self._dialer = Dialer(
            self,
            self._table,
            name=self._name,
            creation=self._creation,
            cookie=self._cookie,
            net=net,
            cert_manager=self._cm,
            registrar=self.registrar,
            lt=self._lt,
        )
        self._admission = Admission(self._name, net, self._table, self._dialer.pending)
        self._spawn = RemoteSpawn(self, router, self._lt, self._name, self._creation, net)
        # Go Ergo nodes (docs/interop.md): their own table, acceptors and routes.
        self._ergo = ErgoWire(
            self,
            router,
            name=self._name,
            creation=self._creation,
            cookie=self._cookie,
            net=net,
            cert_manager=self._cm,
            lt=self._lt,
            offers=self._spawn,
        )
        self._view = NetworkView(self)
        self._registrar: Registrar | None = None
        self._stopped = False
        # node/observe.py: events, counters and health (None for a bare router)
        self._observer: Observer | None = getattr(router, "observer", None)
        if self._observer is not None:
            self._observer.network = self
        # node/trust.py: the cert manager's policy for connections on retired material
        self._trust: TrustKeeper | None = None
        if self._cm is not None:
            self._trust = TrustKeeper(
                self._cm,
                self._lt,
                self._name,
                insecure_dial=net.insecure_skip_verify,
                connections=self.current_connections,
                replace=self._dialer.reconnect,
                close=lambda conn, why: self._table.start_drain(conn, replaced=False, why=why),
            )
            if self._observer is not None:
                self._observer.trust = self._trust

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._lt.run(self._start(), timeout=30.0)
        except BaseException:
            self.stop()
            raise

    async def _start(self) -> None:
        if self._net.mode == NetworkMode.ENABLED:
            acceptors = self._net.acceptors or [AcceptorOptions()]
            for opts in acceptors:
                if opts.protocol not in PROTOCOLS:
                    raise NodeError(f"unknown acceptor protocol {opts.protocol!r}")
                if opts.protocol == PROTOCOL_ERGO:
                    await self._ergo.listen(opts)
                    continue
                acc = await Acceptor(
                    self,
                    opts,
                    node_name=self._name,
                    creation=self._creation,
                    cookie=self._cookie,
                    net=self._net,
                    cert_manager=self._cm,
                ).bound()
                self._acceptors.append(acc)
            if self._net.registrar_enabled:
                await self._start_registrar()
        if self._observer is not None and self._observer.check_interval > 0:
            self._lt.spawn(self._observer.expiry_loop())
        if self._trust is not None:
            self._lt.spawn(self._trust.run())

    async def _start_registrar(self) -> None:
        routes = [
            Route(
                host=a.options.route_host,
                port=a.options.route_port or a.port,
                tls=a.tls is not None,
            )
            for a in self._acceptors
        ]
        reg = self.registrar()
        if reg is None:
            return
        try:
            await reg.start(self._name, routes)
        except ErrTaken as exc:
            raise NodeError(f"node name {self._name} is taken: {exc}") from exc
        except NodeError:
            raise  # the registrar refuses to let the node run (etcd unreachable at start, say)
        except ErgoError as exc:
            # Resolving through it may still work; only our registration is missing.
            log.warning("%s: not registered (%s); reachable by static routes only", self._name, exc)

    def _new_registrar(self) -> Registrar | None:
        """The registrar the options ask for: theirs, else the embedded one (None: off)."""
        if not self._net.registrar_enabled:
            return None
        reg = self._net.registrar
        if reg is None:
            resolve_host = self._net.registrar_resolve_host
            if resolve_host == "":
                resolve_host = self._acceptors[0].host if self._acceptors else None
            return EmbeddedRegistrar(port=self._net.registrar_port, resolve_host=resolve_host)
        if not isinstance(reg, Registrar):
            raise NodeError(f"network.registrar is not a net.Registrar: {type(reg).__name__}")
        return reg

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._trust is not None:
            self._trust.close()
        self._lt.stop(self._close_all)

    async def _close_all(self) -> None:
        self._dialer.cancel_joins()
        reg = self._registrar if self._registrar is not None else self._net.registrar
        if reg is not None:
            with contextlib.suppress(Exception):
                await reg.close()
        await self._ergo.close()
        for acc in self._acceptors:
            acc.close()
        for link in list(self._table.links):
            link.close()
        for acc in self._acceptors:
            await acc.wait_closed()
        # Closed links go within a round trip; abort what a silent peer holds open.
        links = list(self._table.links)
        if links:
            await wait_until(asyncio.gather(*(link.gone for link in links)), 0.5)
        for link in list(self._table.links):
            link.abort()

    # --- acceptors (node/acceptor.py listens and admits) ----------------------------------

    def acceptors(self) -> list[AcceptorInfo]:
        return [a.info() for a in self._acceptors] + [a.info() for a in self._ergo.acceptors]

    # --- LinkOwner (loop thread) --------------------------------------------------------

    def link_admit(self, link: LinkProtocol, event: AdmissionEvent) -> str | None:
        return self._admission.admit(event, link.tls, link.dialer)

    def link_up(self, link: LinkProtocol, done: HandshakeComplete | JoinComplete) -> None:
        if self._stopped:
            raise ErrNoConnection("node is stopping")
        self._table.install(link, done)

    def link_frames(self, link: LinkProtocol, frames: list[fr.Frame]) -> None:
        if not self._table.hold_frames(link, frames):
            self.dispatch_all(link, frames)

    def link_peer_closed(self, link: LinkProtocol, replaced: bool) -> None:
        self._table.link_peer_closed(link, replaced)

    def link_lost(self, link: LinkProtocol, exc: BaseException | None) -> None:
        if self._observer is not None:
            self._observer.link_gone(link)
        self._table.link_lost(link, exc)

    def link_handshake(self, link: LinkProtocol, exc: BaseException | None) -> None:
        """The link's handshake is over (``exc`` None: it came up); counted for metrics."""
        if self._observer is not None:
            side = "dialer" if link.dialer else "acceptor"
            seconds = self._lt.loop.time() - link.started
            if exc is None:
                self._observer.handshake_done(side, "ok", "", seconds)
            else:
                self._observer.handshake_done(side, "failed", failure_reason(exc), seconds)

    def dial_failed(self, exc: BaseException, seconds: float) -> None:
        """A dial failed before any link existed (TCP connect or TLS)."""
        if self._observer is not None:
            self._observer.handshake_done("dialer", "failed", failure_reason(exc), seconds)

    # ConnectionOwner

    @property
    def stopped(self) -> bool:
        return self._stopped

    def connection_dropped(self, peer: str) -> None:
        self._dialer.cancel_joins(peer)  # joins for a connection that is gone
        self._spawn.connection_lost(peer)

    def connection_up(self, conn: Connection, replacing: bool) -> None:
        if self._trust is not None:
            self._trust.connection_up(conn)
        if self._observer is not None:
            self._observer.connection_up(conn, replacing)

    def connection_drained(self, peer: str, reason: str) -> None:
        if self._observer is not None:
            self._observer.connection_drained(peer, reason)

    def dispatch_all(self, link: LinkProtocol, frames: list[fr.Frame]) -> None:
        """Route ``frames`` in order; a run of plain messages goes to the router at once.

        The run is handed over before any other frame (a call, an exit, a
        down) is routed, so those still queue behind the messages before them.
        """
        run: list[tuple[PID, RemoteTarget, Any]] = []
        for frame in frames:
            if isinstance(frame, tuple):  # a send frame: (from_, to, message)
                run.append(frame)
                continue
            if run:
                self._route_sends(link, run)
                run = []
            try:
                assert link.result is not None  # frames come only after the handshake
                self._dispatch(frame, link.result.peer_name)
            except ErgoError as exc:
                self._not_delivered(link, type(frame).__name__, exc)
        if run:
            self._route_sends(link, run)

    def _route_sends(self, link: LinkProtocol, run: list[tuple[PID, RemoteTarget, Any]]) -> None:
        for _, error in self._router.route_sends(run):
            self._not_delivered(link, "message", error)

    def _not_delivered(self, link: LinkProtocol, what: str, exc: ErgoError) -> None:
        peer = link.result.peer_name if link.result is not None else link.peer_address
        _limited.log(
            logging.INFO,
            (self._name, peer, what, type(exc)),
            "%s: frame %s from %s not delivered: %s",
            self._name,
            what,
            peer,
            exc,
        )

    # --- inbound frames (loop thread) ---------------------------------------------------

    def owes_replies(self, peer: str) -> bool:
        return bool(self._owed.get(peer))

    def node_down(self, peer: str, reason: ErrNoConnection) -> None:
        self._owed.pop(peer, None)  # the router forgets those calls: nobody will answer
        self._router.route_node_down(peer, reason)
        if self._observer is not None:
            self._observer.connection_down(peer, reason)

    def _dispatch(self, f: fr.Frame, peer: str) -> None:
        """Route one frame from ``peer`` other than a plain message (those go by runs)."""
        r = self._router
        if isinstance(f, (fr.CallPID, fr.CallName, fr.CallAlias)):
            owed = self._owed.get(f.from_.node)
            if owed is None:
                owed = self._owed[f.from_.node] = set()
            owed.add(f.ref)
            r.route_call(f.from_, f.to, f.ref, f.message)
        elif isinstance(f, fr.CallResponse):
            r.route_reply(f.from_, f.ref, f.result, None)
        elif isinstance(f, fr.CallError):
            err = f.error if isinstance(f.error, BaseException) else ErrNoConnection(str(f.error))
            r.route_reply(f.from_, f.ref, None, err)
        elif isinstance(f, fr.Exit):
            r.route_exit(f.from_, f.to, f.reason)
        elif isinstance(f, fr.Link):
            r.route_link(f.from_, f.target)
        elif isinstance(f, fr.Unlink):
            r.route_unlink(f.from_, f.target)
        elif isinstance(f, fr.Monitor):
            r.route_monitor(f.from_, f.target, f.ref)
        elif isinstance(f, fr.Demonitor):
            r.route_demonitor(f.from_, f.target, f.ref)
        elif isinstance(f, fr.DownFrame):
            r.route_down(f.target, f.to, f.ref, f.reason)
        elif isinstance(f, fr.SpawnRequest):
            self._spawn.requested(f)
        elif isinstance(f, fr.SpawnResult):
            self._spawn.result(f, peer)

    def enable_spawn(self, name: str, factory: Any, *nodes: str) -> None:
        self._spawn.enable(name, factory, *nodes)

    def disable_spawn(self, name: str, *nodes: str) -> None:
        self._spawn.disable(name, *nodes)

    # SpawnOwner

    def send_frame_from_loop(self, node: str, frame: fr.Frame) -> None:
        self._send_frame(node, frame, from_loop=True)

    async def connect_from_loop(self, node: str) -> Connection:
        return await self._dialer.connect(node)

    # --- outbound (process threads) -----------------------------------------------------

    @property
    def _dial_budget(self) -> float:
        """How long a caller waits for a dial: connect, TLS and handshake, with margin."""
        return self._net.connect_timeout + 2 * self._net.handshake_timeout + 5.0

    def _connection(self, node: str) -> Connection:
        conn = self._conns.get(node)
        if conn is not None and conn.state is _CURRENT:
            return conn
        try:
            return self._lt.run(self._dialer.connect(node), timeout=self._dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot connect to {node}: {exc}") from exc

    def _send_frame(
        self, node: str, frame: fr.Frame, from_loop: bool = False, order: int | None = None
    ) -> None:
        if self._ergo.wants(node):
            raise ErrUnsupported(
                f"{type(frame).__name__} is not supported towards Ergo node {node}"
            )
        if order is None:
            order = fr.frame_order(frame)
        self._send_data(str(node), self._encoder.encode_frame(frame, order=order), order, from_loop)

    def _ready(self, node: str, order: int) -> tuple[Connection, LinkProtocol, BatchWriter] | None:
        """The write path's common case: the connection is current and ``order`` has its link."""
        conn = self._conns.get(node)
        if conn is None or conn.state is not _CURRENT:
            return None
        link = conn.sticky.get(order)
        if link is None or link.writer is None:
            return None
        return conn, link, link.writer

    def _send_data(self, node: str, data: bytes, order: int, from_loop: bool = False) -> None:
        """Write one encoded frame to ``node`` on the link for ``order``."""
        # The common case first; anything else goes the general way below, as
        # does a write refused because the link closed meanwhile (nothing was
        # written then).
        ready = None if from_loop else self._ready(node, order)
        if ready is not None:
            up, up_link, up_writer = ready
            limit = up.handshake.peer_max_message_size
            if limit and len(data) > limit:
                raise fr.too_large(len(data), limit)
            try:
                up_writer.write(data)
            except ErrNoConnection:
                pass
            else:
                self._wrote(up, up_link)
                return
        for _ in range(3):
            conn = self._owing.get(node)  # a reply owed on a connection that is closing
            if conn is None:
                conn = self._conns.get(node)
                if not from_loop and (conn is None or conn.state is not _CURRENT):
                    self._dial_and_send(node, data, order)
                    return
            if conn is None:
                raise ErrNoConnection(f"not connected to {node}")
            limit = conn.handshake.peer_max_message_size
            if limit and len(data) > limit:
                raise fr.too_large(len(data), limit)
            link = conn.pick(order)
            writer = link.writer
            if writer is None:
                raise ErrNoConnection(f"link to {node} is not ready")
            try:
                if from_loop:
                    writer.write_now(data)
                else:
                    writer.write(data)
            except ErrNoConnection:
                if conn.closing:
                    continue  # closed or handed over meanwhile: the next one takes it
                raise
            self._wrote(conn, link)
            return
        raise ErrNoConnection(f"connection to {node} keeps closing")

    def _dial_and_send(self, node: str, data: bytes, order: int) -> None:
        """Process thread: dial ``node``, and write ``data`` from the loop once it is up.

        The write follows the handshake on the loop, instead of after a
        hand-over back to this thread and another one to the loop (about a
        fifth of a millisecond per set-up here).
        """

        async def dial_and_send() -> None:
            await self._dialer.connect(node)
            self._send_data(node, data, order, from_loop=True)

        try:
            self._lt.run(dial_and_send(), timeout=self._dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot connect to {node}: {exc}") from exc

    def _wrote(self, conn: Connection, link: LinkProtocol) -> None:
        """Count a frame out; a busy connection opens the rest of its pool."""
        link.messages_out += 1
        if conn.grow is not None and link.messages_out >= POOL_GROW_AFTER:
            self._wrote_grow(conn)

    def _wrote_grow(self, conn: Connection) -> None:
        if not conn.growing:
            conn.growing = True
            with contextlib.suppress(ErgoError):  # stopping: no pool to grow
                self._lt.call_soon(self._dialer.grow, conn)

    def send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        order = 1 + from_pid.id % 255  # fr.order_byte, inline: this runs per message
        node = to.node  # an Atom is a str: it finds the connection without a copy
        # The common case (as _ready and _wrote, inline): the sender's link is
        # up. The message goes to its writer as an item, so that a burst from
        # one process to one recipient leaves as one batch frame.
        conn = self._conns.get(node)
        if conn is not None and conn.state is _CURRENT:
            link = conn.sticky.get(order)
            writer = link.writer if link is not None else None
            if link is not None and writer is not None:
                limit = conn.handshake.peer_max_message_size
                entry, item = self._encoder.send_item(from_pid, to, message, order, limit)
                try:
                    writer.write_item(entry, order, item, _send_run, len(entry[3]) + 16)
                except ErrNoConnection:
                    pass  # closed meanwhile: nothing was written, go the general way
                else:
                    link.messages_out += 1
                    if conn.grow is not None and link.messages_out >= POOL_GROW_AFTER:
                        self._wrote_grow(conn)
                    return
        if self._ergo.wants(node):
            self._ergo.send(from_pid, to, message)
            return
        self._send_data(node, self._encoder.encode_send(from_pid, to, message, order), order)

    def call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        code = _CALL_CODES.get(type(to))
        if code is None:
            raise ErrIncorrect(f"cannot call {to!r}")
        if self._ergo.wants(to.node):
            self._ergo.call(from_pid, to, ref, request)
            return
        order = fr.order_byte(from_pid.id)
        data = self._encoder.encode_call(code, from_pid, to, ref, request, order)
        self._send_data(to.node, data, order)

    def reply(
        self, from_pid: PID, to: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        if self._ergo.wants(to.node):
            self._ergo.reply(from_pid, to, ref, value, error)
            return
        try:
            if error is not None:
                self._send_frame(to.node, fr.CallError(from_pid, to, ref, error))
                return
            order = fr.order_byte(from_pid.id)
            try:
                data = self._encoder.encode_call(
                    fr.TYPE_CALL_RESPONSE, from_pid, to, ref, value, order
                )
                self._send_data(to.node, data, order)
            except ErgoError as exc:
                if isinstance(exc, ErrNoConnection):
                    raise
                # The value cannot travel (too large, unencodable): the caller learns why.
                self._send_frame(to.node, fr.CallError(from_pid, to, ref, exc))
        finally:
            owed = self._owed.get(to.node)
            if owed is not None:
                owed.discard(ref)
                if not owed and to.node in self._owing:
                    # Written (queued on the link) before this: the Close goes behind it.
                    with contextlib.suppress(ErgoError):
                        self._lt.call_soon(self._table.replies_written, to.node)

    def link(self, from_pid: PID, target: RemoteTarget) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.link(from_pid, target)
            return
        self._send_frame(target.node, fr.Link(from_pid, target))

    def unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.unlink(from_pid, target)
            return
        self._send_frame(target.node, fr.Unlink(from_pid, target))

    def monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.monitor(from_pid, target, ref)
            return
        self._send_frame(target.node, fr.Monitor(from_pid, target, ref))

    def demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.demonitor(from_pid, target, ref)
            return
        self._send_frame(target.node, fr.Demonitor(from_pid, target, ref))

    def exit(
        self, from_target: RemoteTarget, to: PID, reason: Any, ended: PID | None = None
    ) -> None:
        if self._ergo.wants(to.node):
            self._ergo.watches.exit(from_target, to, reason, ended)
            return
        order = fr.order_byte(ended.id) if ended is not None else None
        self._send_frame(to.node, fr.Exit(from_target, to, reason), order=order)

    def down(
        self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any, ended: PID | None = None
    ) -> None:
        if self._ergo.wants(to.node):
            self._ergo.watches.down(from_target, to, ref, reason, ended)
            return
        order = fr.order_byte(ended.id) if ended is not None else None
        self._send_frame(to.node, fr.DownFrame(to, from_target, ref, reason), order=order)

    def spawn(self, from_pid: PID, order: RemoteSpawnRequest) -> PID:
        if self._ergo.wants(order.node):
            return self._ergo.spawns.spawn(from_pid, order)
        return self._spawn.spawn(from_pid, order)

    def connect(self, node: str) -> None:
        if self._ergo.wants(node):
            self._ergo.connection(node)
            return
        self._connection(node)

    @property
    def core_pid(self) -> PID:
        return self._router.pid

    # --- what the user's gen.Network view (node/network_view.py) reads ---------------------

    def network(self) -> Network:
        return self._view

    def current_connections(self) -> dict[str, Connection]:
        """The connections in use now, by peer (a copy; any thread)."""
        return self._conns.copy()

    def live_links(self) -> tuple[LinkProtocol, ...]:
        """Every link up now, current or closing (a snapshot; any thread)."""
        return tuple(self._table.links)

    def peers(self) -> list[str]:
        """The nodes connected now (in either dialect)."""
        return sorted([*self._conns, *self._ergo.peers()])

    def current(self, name: str) -> Connection | None:
        """The connection to ``name`` in use now, if any."""
        return self._conns.get(name)

    def connection(self, name: str) -> Connection:
        """The connection to ``name``, dialled if there is none (any thread but the loop)."""
        return self._connection(name)

    def identity_verified(self, conn: Connection, peer_cert_fingerprint: str | None) -> bool:
        """Whether ``conn``'s peer proved its name with a verified certificate."""
        return bool(
            peer_cert_fingerprint is not None
            and self._net.verify_node_identity
            and not (conn.dialed and self._net.insecure_skip_verify)
        )

    def registrar(self) -> Registrar | None:
        # Made on first use: a hidden node never starts one, but resolves.
        with self._registrar_lock:
            if self._registrar is None:
                self._registrar = self._new_registrar()
            return self._registrar

    def add_route(self, match: str, route: Any, weight: int = 0) -> None:
        protocol = getattr(route, "protocol", None)
        if protocol is not None and protocol not in PROTOCOLS:
            raise ErrIncorrect(f"unknown route protocol {protocol!r}")
        if protocol == PROTOCOL_ERGO:
            self._ergo.add_route(match, route, weight)
            return
        self._dialer.add_route(match, route, weight)

    def ergo_connection(self, name: str) -> ErgoConnection | None:
        """The connection to ``name`` if it is (to be) a Go Ergo node, dialled if need be."""
        return self._ergo.connection(str(name)) if self._ergo.wants(str(name)) else None

    def ergo_info(self, name: str) -> dict[str, Any] | None:
        """``Network.info`` of a connection to a Go Ergo node (None: not one)."""
        return self._ergo.info(str(name))

    def remove_route(self, match: str) -> None:
        if self._ergo.remove_route(match):
            return
        self._dialer.remove_route(match)

    def disconnect(self, name: str) -> None:
        """Close the connection to ``name`` gracefully; returns once it is closed.

        Both sides stop sending, and what either had sent is delivered first.
        Links and monitors towards ``name`` then fire and pending calls fail
        (``gen.ErrNoConnection``), as on any lost connection; the next send
        connects again.
        """
        name = str(name)
        if name in self._ergo.conns:  # Ergo has no graceful close: the link just closes
            self._ergo.disconnect(name)
            return

        async def close() -> None:
            conn = self._conns.get(name)
            if conn is not None:
                self._table.start_drain(conn, replaced=False, why="disconnect()")
            for old in list(self._table.draining.get(name, ())):
                await self._table.await_drained(old)

        self._lt.run(close(), timeout=self._table.drain_timeout + 5.0)

    def reconnect(self, name: str) -> None:
        """Replace the connection to ``name`` with a new one, without a gap.

        The new connection is made with the cert manager's *current* settings
        on both sides (the way to move a live connection onto a rotated
        certificate or CA pool); traffic switches to it as soon as it is up,
        the old one is drained (nothing in flight is lost or reordered), and
        links, monitors and pending calls carry on: actors see nothing. Returns
        once both sides use the new connection. If the peer restarted
        meanwhile, this is an ordinary node-down. Not connected: connects.
        """
        name = str(name)
        if self._ergo.wants(name):  # no hand-over in Ergo's dialect: close, then dial
            self._ergo.disconnect(name)
            self._ergo.connection(name)
            return
        try:
            self._lt.run(self._dialer.reconnect(name), timeout=self._dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot reconnect to {name}: {exc}") from exc
