"""The TCP/TLS network backend: makes the parts and wires them together.

The parts, one job each: ``node/acceptor.py`` listens and admits,
``node/admission.py`` decides who may connect (both ways),
``node/dialer.py`` finds and dials peers (routes, pools, reconnects),
``node/connections.py`` keeps the connection table (closing, hand-over),
``node/write_path.py`` carries what processes send (``TCPBackend`` is a
``WritePath``), ``node/dispatch.py`` routes the frames that arrive,
``node/spawn.py`` does remote spawn, ``node/trust.py`` applies the cert
manager's policy to connections on retired material, ``node/ergo_wire.py``
speaks to Go Ergo nodes, and ``node/network_view.py`` is the user's
``gen.Network``. Every part is made with the one ``node/context.py``
``NodeContext`` built here (name, creation, cookie, options, cert
manager, loop thread). What stays here: starting and stopping them (the loop
thread, acceptors, registrar), and the callbacks links and the connection
table make (``LinkOwner``, ``ConnectionOwner``), passed on to the part
whose job they are.

All network I/O runs on the node's loop thread (``net.loop.LoopThread``).
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

from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoConnection,
    ErrTaken,
    ErrTimeout,
    HandshakeRejected,
    NodeError,
)
from ergo_py.gen.identifiers import PID
from ergo_py.gen.node import (
    AcceptorInfo,
    Network,
    NetworkBackend,
    NodeRouter,
    RemoteSpawnRequest,
)
from ergo_py.gen.options import (
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
from ergo_py.net.registrar import EmbeddedRegistrar
from ergo_py.node.acceptor import Acceptor
from ergo_py.node.admission import Admission
from ergo_py.node.connections import Connection, ConnectionTable
from ergo_py.node.context import NodeContext
from ergo_py.node.dialer import Dialer
from ergo_py.node.dispatch import Dispatcher
from ergo_py.node.ergo_pool import ErgoConnection
from ergo_py.node.ergo_wire import ErgoWire
from ergo_py.node.network_view import NetworkView
from ergo_py.node.observe import Observer
from ergo_py.node.spawn import RemoteSpawn
from ergo_py.node.trust import TrustKeeper
from ergo_py.node.write_path import WritePath

log = logging.getLogger(__name__)


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


class TCPBackend(WritePath):
    """Connections to other nodes over TCP, with TLS when a cert manager is set."""

    def __init__(self, router: NodeRouter, options: NodeOptions) -> None:
        self._router = router
        name = str(router.name)
        self._options = options
        net = options.network
        if not net.cookie:
            net.cookie = _random_cookie()
            log.warning("%s: no cookie set; using a random one", name)
        if net.insecure_skip_verify:
            log.warning("%s: insecure_skip_verify is on: peers are not verified", name)
        # What every part below is made with (node/context.py).
        ctx = NodeContext(
            name=name,
            creation=router.creation,
            cookie=net.cookie,
            net=net,
            cert_manager=options.cert_manager,
            lt=LoopThread(name),
        )
        table = ConnectionTable(self, ctx)
        self._acceptors: list[Acceptor] = []
        self._registrar_lock = threading.Lock()
        dialer = Dialer(self, table, ctx, registrar=self.registrar)
        self._admission = Admission(ctx, table, dialer.pending)
        self._spawn = RemoteSpawn(self, router, ctx)
        self._dispatcher = Dispatcher(name, router, self._spawn)
        self._dispatch_all = self._dispatcher.dispatch_all
        # Go Ergo nodes (docs/interop.md): their own table, acceptors and routes.
        ergo = ErgoWire(self, router, ctx, offers=self._spawn)
        # The write path's parts are this backend's too (_ctx, _table, _dialer, _ergo).
        super().__init__(ctx=ctx, table=table, dialer=dialer, ergo=ergo, owed=self._dispatcher.owed)
        self._view = NetworkView(self)
        self._registrar: Registrar | None = None
        self._stopped = False
        # node/observe.py: events, counters and health (None for a bare router)
        self._observer: Observer | None = getattr(router, "observer", None)
        if self._observer is not None:
            self._observer.network = self
        # node/trust.py: the cert manager's policy for connections on retired material
        self._trust: TrustKeeper | None = None
        if ctx.cert_manager is not None:
            self._trust = TrustKeeper(
                ctx,
                connections=self.current_connections,
                replace=dialer.reconnect,
                close=lambda conn, why: table.start_drain(conn, replaced=False, why=why),
            )
            if self._observer is not None:
                self._observer.trust = self._trust

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._ctx.lt.run(self._start(), timeout=30.0)
        except BaseException:
            self.stop()
            raise

    async def _start(self) -> None:
        if self._ctx.net.mode == NetworkMode.ENABLED:
            acceptors = self._ctx.net.acceptors or [AcceptorOptions()]
            for opts in acceptors:
                if opts.protocol not in PROTOCOLS:
                    raise NodeError(f"unknown acceptor protocol {opts.protocol!r}")
                if opts.protocol == PROTOCOL_ERGO:
                    await self._ergo.listen(opts)
                    continue
                acc = await Acceptor(self, opts, self._ctx).bound()
                self._acceptors.append(acc)
            if self._ctx.net.registrar_enabled:
                await self._start_registrar()
        if self._observer is not None and self._observer.check_interval > 0:
            self._ctx.lt.spawn(self._observer.expiry_loop())
        if self._trust is not None:
            self._ctx.lt.spawn(self._trust.run())

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
            await reg.start(self._ctx.name, routes)
        except ErrTaken as exc:
            raise NodeError(f"node name {self._ctx.name} is taken: {exc}") from exc
        except NodeError:
            raise  # the registrar refuses to let the node run (etcd unreachable at start, say)
        except ErgoError as exc:
            # Resolving through it may still work; only our registration is missing.
            log.warning(
                "%s: not registered (%s); reachable by static routes only", self._ctx.name, exc
            )

    def _new_registrar(self) -> Registrar | None:
        """The registrar the options ask for: theirs, else the embedded one (None: off)."""
        if not self._ctx.net.registrar_enabled:
            return None
        reg = self._ctx.net.registrar
        if reg is None:
            resolve_host = self._ctx.net.registrar_resolve_host
            if resolve_host == "":
                resolve_host = self._acceptors[0].host if self._acceptors else None
            return EmbeddedRegistrar(port=self._ctx.net.registrar_port, resolve_host=resolve_host)
        if not isinstance(reg, Registrar):
            raise NodeError(f"network.registrar is not a net.Registrar: {type(reg).__name__}")
        return reg

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._trust is not None:
            self._trust.close()
        self._ctx.lt.stop(self._close_all)

    async def _close_all(self) -> None:
        self._dialer.cancel_joins()
        reg = self._registrar if self._registrar is not None else self._ctx.net.registrar
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
            self._dispatch_all(link, frames)

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
            seconds = self._ctx.lt.loop.time() - link.started
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
        self._dispatch_all(link, frames)

    def owes_replies(self, peer: str) -> bool:
        return self._dispatcher.owes_replies(peer)

    def node_down(self, peer: str, reason: ErrNoConnection) -> None:
        self._dispatcher.node_down(peer, reason)
        if self._observer is not None:
            self._observer.connection_down(peer, reason)

    # --- remote spawn (node/spawn.py) -----------------------------------------------------

    def enable_spawn(self, name: str, factory: Any, *nodes: str) -> None:
        self._spawn.enable(name, factory, *nodes)

    def disable_spawn(self, name: str, *nodes: str) -> None:
        self._spawn.disable(name, *nodes)

    def spawn(self, from_pid: PID, order: RemoteSpawnRequest) -> PID:
        if self._ergo.wants(order.node):
            return self._ergo.spawns.spawn(from_pid, order)
        return self._spawn.spawn(from_pid, order)

    async def connect_from_loop(self, node: str) -> Connection:
        """SpawnOwner: the connection to ``node``, dialled if need be (loop thread)."""
        return await self._dialer.connect(node)

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
            and self._ctx.net.verify_node_identity
            and not (conn.dialed and self._ctx.net.insecure_skip_verify)
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

        self._ctx.lt.run(close(), timeout=self._table.drain_timeout + 5.0)

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
            self._ctx.lt.run(self._dialer.reconnect(name), timeout=self._ctx.dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot reconnect to {name}: {exc}") from exc
