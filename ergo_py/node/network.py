"""The TCP/TLS network backend: acceptors, dialer, connections, routing of frames.

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
import re
import secrets
import ssl
import string
import threading
from collections.abc import Callable
from typing import Any

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNameUnknown,
    ErrNoConnection,
    ErrNoRoute,
    ErrNotAllowed,
    ErrTaken,
    ErrTimeout,
    HandshakeRejected,
    NodeError,
)
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref, random_ref_id
from ergo_py.gen.node import (
    AcceptorInfo,
    Network,
    NetworkBackend,
    NodeRouter,
    RemoteNode,
    RemoteTarget,
)
from ergo_py.gen.options import (
    POOL_GROW_AFTER,
    AcceptorOptions,
    NetworkFlags,
    NetworkMode,
    NetworkRoute,
    NodeOptions,
    ProcessOptions,
)
from ergo_py.net import frames as fr
from ergo_py.net.handshake import (
    DialerHandshake,
    HandshakeComplete,
    JoinComplete,
    JoinHandshake,
)
from ergo_py.net.link import LinkProtocol, TLSDetails
from ergo_py.net.loop import LoopThread
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.registrar import Registrar
from ergo_py.net.registrar_proto import Route
from ergo_py.net.tls import client_context_for_dial
from ergo_py.net.writer import BatchWriter
from ergo_py.node.acceptor import Acceptor
from ergo_py.node.connection import Connection
from ergo_py.node.handover import Handover

log = logging.getLogger(__name__)
# Lines a peer can cause (undeliverable frames, refusals, failed dials): per
# kind, a few pass and the rest are counted (see net.ratelog).
_limited = LogLimiter(log)

# The call frame type for each kind of callee.
_CALL_CODES = {PID: fr.TYPE_CALL_PID, ProcessID: fr.TYPE_CALL_NAME, Alias: fr.TYPE_CALL_ALIAS}


def create_backend(router: NodeRouter, options: NodeOptions) -> NetworkBackend:
    """The node's backend for ``NetworkMode.ENABLED`` and ``HIDDEN``."""
    backend = TCPBackend(router, options)
    backend.start()
    return backend


def _random_cookie() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


class TCPBackend(Handover, NetworkBackend, Network):
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
        self._encoder = fr.FrameEncoder()  # this node's identifier caches: shared with no other
        self._conns: dict[str, Connection] = {}
        self._dialing: dict[str, asyncio.Future[Connection]] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._links: set[LinkProtocol] = set()
        self._joins: dict[asyncio.Future[Any], str] = {}
        self._link_conn: dict[LinkProtocol, Connection] = {}
        self._draining: dict[str, list[Connection]] = {}
        self._drained: dict[str, Connection] = {}  # closed, by id, for late joins
        self._replacing: dict[str, asyncio.Future[None]] = {}
        # Refs of calls each peer made that are not answered yet (sets: one
        # add or discard is atomic, from the loop or any process thread).
        self._owed: dict[str, set[Ref]] = {}
        self._owing: dict[str, Connection] = {}  # Close held until those are answered
        self._holding = 0
        self._acceptors: list[Acceptor] = []
        self._routes: list[tuple[re.Pattern[str], NetworkRoute, int]] = []
        self._routes_lock = threading.Lock()
        self._spawns: dict[Ref, tuple[str, asyncio.Future[PID]]] = {}
        self._spawnable: dict[str, tuple[Any, frozenset[str] | None]] = {}
        self._registrar: Registrar | None = None
        self._stopped = False

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
                acc = await Acceptor.listen(
                    self,
                    opts,
                    node_name=self._name,
                    creation=self._creation,
                    cookie=self._cookie,
                    net=self._net,
                    cert_manager=self._cm,
                )
                self._acceptors.append(acc)
            if self._net.registrar_enabled:
                await self._start_registrar()

    async def _start_registrar(self) -> None:
        routes = [
            Route(
                host=a.options.route_host,
                port=a.options.route_port or a.port,
                tls=a.tls is not None,
            )
            for a in self._acceptors
        ]
        resolve_host = self._net.registrar_resolve_host
        if resolve_host == "":
            resolve_host = self._acceptors[0].host if self._acceptors else None
        reg = Registrar(port=self._net.registrar_port, resolve_host=resolve_host)
        try:
            await reg.start(self._name, routes)
        except ErrTaken as exc:
            raise NodeError(f"node name {self._name} is taken on this host: {exc}") from exc
        except ErgoError as exc:
            log.warning("%s: registrar unavailable (%s); static routes only", self._name, exc)
            await reg.stop()
            return
        self._registrar = reg

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._lt.stop(self._close_all)

    async def _close_all(self) -> None:
        for task in list(self._joins):
            task.cancel()
        if self._registrar is not None:
            with contextlib.suppress(Exception):
                await self._registrar.stop()
        for acc in self._acceptors:
            acc.close()
        for link in list(self._links):
            link.close()
        for acc in self._acceptors:
            await acc.wait_closed()
        for _ in range(50):
            if not self._links:
                break
            await asyncio.sleep(0.01)
        for link in list(self._links):
            link.abort()

    # --- acceptors (node/acceptor.py listens and admits) ----------------------------------

    def acceptors(self) -> list[AcceptorInfo]:
        return [a.info() for a in self._acceptors]

    # AcceptorOwner: asked during an acceptor's handshakes

    def has_pending_dial(self, peer: str) -> bool:
        return peer in self._dialing or peer in self._replacing

    def check_accepted_peer(
        self, tls: TLSDetails, peer: str, creation: int, replace: bool
    ) -> str | None:
        return self._check_peer(peer, creation, replace) or self._identity_refusal(
            tls, peer, dialer=False
        )

    def _check_peer(self, peer: str, creation: int, replace: bool = False) -> str | None:
        if peer == self._name:
            return "name taken"
        existing = self._conns.get(peer)
        if (
            existing is not None
            and existing.done.peer_creation == creation
            and existing.dialed
            and not replace
        ):
            # Our own dial to that peer won already: its dial lost the race and
            # it will find our connection ("name taken" tells it so).
            return "name taken"
        # A connection the peer dialed earlier and dials again is one it has
        # dropped (its close may not have reached us yet): link_up replaces it.
        return None

    def lookup_connection(self, connection_id: str) -> str | None:
        conn = self._by_id(connection_id)
        return conn.peer if conn is not None else None

    def _by_id(self, connection_id: str) -> Connection | None:
        """A current or draining connection (a join may come after a hand-over)."""
        for conn in self._conns.values():
            if conn.done.connection_id == connection_id:
                return conn
        for queue in self._draining.values():
            for conn in queue:
                if conn.done.connection_id == connection_id:
                    return conn
        return self._drained.get(connection_id)

    # --- LinkOwner (loop thread) --------------------------------------------------------

    def _identity_refusal(self, tls: TLSDetails | None, peer_name: str, dialer: bool) -> str | None:
        """Why a peer's verified certificate does not prove it is ``peer_name`` (or None)."""
        if not self._net.verify_node_identity or tls is None or tls.peer is None:
            return None
        if dialer and self._net.insecure_skip_verify:
            return None
        peer = tls.peer
        if peer.has_node_name(peer_name):
            return None
        host = Atom(peer_name).host
        if (
            not peer.node_names
            and self._net.identity_host_fallback
            and (host in peer.dns_names or host in peer.ip_addresses)
        ):
            return None
        named = ", ".join(peer.node_names) or "no node name"
        return f"identity: certificate {peer.fingerprint[:16]} names {named}, not {peer_name}"

    def _check_identity(self, link: LinkProtocol, peer_name: str) -> None:
        reason = self._identity_refusal(link.tls, peer_name, link.dialer)
        if reason is not None:
            key = (self._name, "identity", peer_name)
            _limited.log(logging.WARNING, key, "%s: refused %s: %s", self._name, peer_name, reason)
            raise ErrNotAllowed(reason)

    def link_up(self, link: LinkProtocol, done: HandshakeComplete | JoinComplete) -> None:
        if self._stopped:
            raise ErrNoConnection("node is stopping")
        self._check_identity(link, done.peer_name)
        if isinstance(done, JoinComplete):
            conn = self._by_id(done.connection_id)
            if conn is None or conn.peer != done.peer_name:
                raise ErrNoConnection(f"join for unknown connection to {done.peer_name}")
            conn.links.append(link)
            self._links.add(link)
            self._link_conn[link] = conn
            self._allow_batches(link, conn)
            if conn.draining or conn.closed:  # a connection on its way out: close it likewise
                link.send_close(conn.replaced)
            return
        old = self._conns.get(done.peer_name)
        replacing: Connection | None = None
        if old is not None:
            same = old.done.peer_creation == done.peer_creation
            if same and done.replace:
                replacing = old
            elif same and (old.dialed or link.dialer):
                raise ErrTaken(f"already connected to {done.peer_name}")
            else:
                why = "restarted" if not same else "replaced its connection"
                self._drop(old, ErrNoConnection(f"{done.peer_name} {why}"))
        conn = Connection(done.peer_name, done, [link], dialed=link.dialer)
        self._conns[done.peer_name] = conn
        self._links.add(link)
        self._link_conn[link] = conn
        self._allow_batches(link, conn)
        if replacing is not None:
            self._start_drain(replacing, replaced=True, why="handed over to a new connection")
        self._hold_behind_draining(conn)
        tls = link.tls
        log.info(
            "%s: %s %s (%s, cert version %s, peer cert %s)",
            self._name,
            "connection handed over to" if replacing is not None else "connected to",
            done.peer_name,
            tls.version if tls and tls.version else "plain TCP",
            tls.local_state.version if tls and tls.local_state else "-",
            tls.peer.fingerprint[:16] if tls and tls.peer else "-",
        )
        ev = self._arrived.pop(done.peer_name, None)
        if ev is not None:
            ev.set()

    @staticmethod
    def _allow_batches(link: LinkProtocol, conn: Connection) -> None:
        """Let the link's writer merge bursts of sends, within the peer's frame limit."""
        if link.writer is not None:
            peer = conn.done.peer_max_message_size
            link.writer.batch_limit = min(peer, fr.BATCH_MAX) if peer else fr.BATCH_MAX

    def link_frames(self, link: LinkProtocol, frames: list[fr.Frame]) -> None:
        if self._holding:
            conn = self._link_conn.get(link)
            if conn is not None and conn.held is not None:
                conn.held.append((link, frames))
                return
        self._dispatch_all(link, frames)

    def _dispatch_all(self, link: LinkProtocol, frames: list[fr.Frame]) -> None:
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
                self._dispatch(frame)
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

    def link_peer_closed(self, link: LinkProtocol, replaced: bool) -> None:
        conn = self._link_conn.get(link)
        if conn is None:
            return
        if conn.held is not None:  # behind frames still held: handled in turn
            conn.held.append((link, replaced))
            return
        self._peer_closed(conn, replaced)

    def link_lost(self, link: LinkProtocol, exc: BaseException | None) -> None:
        self._links.discard(link)
        conn = self._link_conn.pop(link, None)
        if conn is None or conn.closed:
            return
        if conn.draining:
            if link in conn.links:
                conn.links.remove(link)
            if link.closed_cleanly:
                self._drain_progress(conn)
            else:
                why = f"connection to {conn.peer} lost while closing: {exc or 'closed early'}"
                self._abandon(conn, ErrNoConnection(why))
            return
        if link in conn.links:
            self._drop(conn, ErrNoConnection(f"connection to {conn.peer} lost: {exc or 'closed'}"))

    def _drop(self, conn: Connection, reason: ErrNoConnection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.drained.set()
        if self._conns.get(conn.peer) is conn:
            del self._conns[conn.peer]
        self._unhold(conn, dispatch=False)  # at most once: the node-down below says so
        for link in conn.links:
            link.close()
        for task, peer in list(self._joins.items()):
            if peer == conn.peer:
                task.cancel()  # a join for a connection that is gone
        for node, fut in list(self._spawns.values()):
            if node == conn.peer and not fut.done():
                fut.set_exception(ErrNoConnection(f"connection to {node} lost"))
        log.info("%s: %s", self._name, reason)
        self._node_down(conn.peer, reason)

    # --- inbound frames (loop thread) ---------------------------------------------------

    def _owes_replies(self, peer: str) -> bool:
        return bool(self._owed.get(peer))

    def _node_down(self, peer: str, reason: ErrNoConnection) -> None:
        self._owed.pop(peer, None)  # the router forgets those calls: nobody will answer
        self._router.route_node_down(peer, reason)

    def _dispatch(self, f: fr.Frame) -> None:
        """Route one frame other than a plain message (those go by runs, see above)."""
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
            self._spawn_requested(f)
        elif isinstance(f, fr.SpawnResult):
            _, fut = self._spawns.pop(f.ref, ("", None))
            if fut is not None and not fut.done():
                if f.pid is not None:
                    fut.set_result(f.pid)
                else:
                    err = (
                        f.error
                        if isinstance(f.error, BaseException)
                        else ErrNotAllowed(str(f.error))
                    )
                    fut.set_exception(err)

    def _spawn_requested(self, f: fr.SpawnRequest) -> None:
        """Answer a remote spawn request: refuse at once, or spawn off the loop and reply."""
        peer = str(f.from_.node)
        entry = self._spawnable.get(f.factory)
        error: BaseException | None = None
        if not self._net.flags & NetworkFlags.ENABLE_REMOTE_SPAWN:
            error = ErrNotAllowed(f"remote spawn is switched off on {self._name}")
        elif entry is None:
            error = ErrNameUnknown(f"{f.factory!r} is not enabled for remote spawn")
        elif entry[1] is not None and peer not in entry[1]:
            error = ErrNotAllowed(f"{peer} may not spawn {f.factory!r} on {self._name}")
        if error is not None or entry is None:
            self._reply_spawn(f, None, error)
            return
        factory = entry[0]
        loop = asyncio.get_running_loop()
        options = ProcessOptions(link_parent=f.link_parent, env=dict(f.env))
        job = loop.run_in_executor(
            None, self._router.route_spawn, f.from_, f.register or None, factory, f.args, options
        )

        def done(job: asyncio.Future[PID]) -> None:
            exc = job.exception()
            self._reply_spawn(f, None if exc else job.result(), exc)

        job.add_done_callback(done)

    def _reply_spawn(
        self, f: fr.SpawnRequest, pid: PID | None, error: BaseException | None
    ) -> None:
        try:
            self._send_frame(
                f.from_.node, fr.SpawnResult(f.from_, f.ref, pid, error), from_loop=True
            )
        except ErgoError as exc:
            log.info("%s: spawn result for %s not sent: %s", self._name, f.from_, exc)

    def enable_spawn(self, name: str, factory: Any, *nodes: str) -> None:
        with self._routes_lock:
            self._spawnable[name] = (factory, frozenset(nodes) if nodes else None)

    def disable_spawn(self, name: str, *nodes: str) -> None:
        with self._routes_lock:
            entry = self._spawnable.get(name)
            if entry is None:
                return
            if not nodes:
                del self._spawnable[name]
            elif entry[1] is None:
                raise ErrIncorrect(
                    f"{name!r} is enabled for every node; disable it entirely, then re-enable"
                )
            else:
                self._spawnable[name] = (entry[0], entry[1] - frozenset(nodes))

    # --- dialing (loop thread) ----------------------------------------------------------

    def _resolve_static(self, node: str) -> list[NetworkRoute]:
        with self._routes_lock:
            routes = sorted(self._routes, key=lambda r: -r[2])
        return [route for pattern, route, _ in routes if pattern.fullmatch(node)]

    async def _routes_for(self, node: str) -> list[NetworkRoute]:
        static = self._resolve_static(node)
        if static:
            return static
        reg = self._registrar
        if reg is None:
            if self._net.registrar_enabled and self._net.mode != NetworkMode.DISABLED:
                reg = Registrar(port=self._net.registrar_port)
                try:
                    return [self._route_of(r) for r in await reg.resolve(node)]
                finally:
                    await reg.stop()
            raise ErrNoRoute(f"no route to {node}")
        return [self._route_of(r) for r in await reg.resolve(node)]

    @staticmethod
    def _route_of(r: Route) -> NetworkRoute:
        return NetworkRoute(host=r.host, port=r.port, tls=r.tls)

    async def _connect(self, node: str) -> Connection:
        node = str(node)
        conn = self._conns.get(node)
        if conn is not None:
            return conn
        for old in list(self._draining.get(node, ())):
            if not old.replaced:
                # Closed on purpose: let the peer finish forgetting it first,
                # or our new dial would meet the old connection there.
                await self._await_drained(old)
        conn = self._conns.get(node)
        if conn is not None:
            return conn
        pending = self._dialing.get(node)
        if pending is not None:
            return await asyncio.shield(pending)
        if node == self._name:
            raise ErrIncorrect("a node cannot connect to itself")
        fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._dialing[node] = fut
        try:
            conn = await self._dial_any(node)
            fut.set_result(conn)
            return conn
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            del self._dialing[node]

    async def _dial_any(self, node: str, replacing: Connection | None = None) -> Connection:
        try:
            routes = await self._routes_for(node)
        except ErgoError as exc:
            raise ErrNoConnection(f"cannot resolve {node}: {exc}") from exc
        errors: list[str] = []
        for route in routes:
            try:
                return await self._dial(node, route, replace=replacing is not None)
            except HandshakeRejected as exc:
                # "simultaneous": the peer's dial to us wins the tie-break;
                # "name taken": its dial already won. Either way use that one.
                if exc.reason in ("simultaneous", "name taken"):
                    conn = await self._await_incoming(node, replacing)
                    if conn is not None:
                        return conn
                errors.append(f"rejected: {exc.reason}")
            except (TimeoutError, OSError, ssl.SSLError, ErgoError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        why = "; ".join(errors) or "no routes"
        mine = self._cm.state() if self._cm is not None else None
        _limited.log(
            logging.WARNING,
            (self._name, "dial", node),
            "%s: cannot connect to %s: %s%s",
            self._name,
            node,
            why,
            f" (our certificate {mine.certificate.fingerprint[:16]}, version {mine.version})"
            if mine is not None
            else "",
        )
        raise ErrNoConnection(f"cannot connect to {node}: {why}")

    async def _await_incoming(
        self, node: str, replacing: Connection | None = None
    ) -> Connection | None:
        """The peer's connection to us that won over our dial (other than ``replacing``)."""
        conn = self._conns.get(node)
        if conn is not None and conn is not replacing:
            return conn
        ev = self._arrived.setdefault(node, asyncio.Event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ev.wait(), self._net.handshake_timeout)
        conn = self._conns.get(node)
        return conn if conn is not replacing else None

    async def _open_link(
        self,
        host: str,
        port: int,
        use_tls: bool,
        server_hostname: str,
        machine: Callable[[TLSDetails], DialerHandshake | JoinHandshake],
    ) -> HandshakeComplete | JoinComplete:
        """Dial one link and run its handshake; the TLS context is the manager's current one."""
        ctx: ssl.SSLContext | None = None
        sni: str | None = None
        if use_tls:
            if self._cm is None:
                raise ErrNoConnection(f"{host}:{port} speaks TLS but this node has no cert manager")
            ctx, name = client_context_for_dial(self._cm, self._net.insecure_skip_verify)
            sni = name or server_hostname

        def factory() -> LinkProtocol:
            return LinkProtocol(
                self,
                machine,
                handshake_timeout=self._net.handshake_timeout,
                max_message_size=self._net.max_message_size,
                dialer=True,
                keepalive=self._net.keepalive_period,
            )

        _, link = await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(
                factory,
                host,
                port,
                ssl=ctx,
                server_hostname=sni,
                ssl_handshake_timeout=self._net.handshake_timeout if ctx is not None else None,
            ),
            self._net.connect_timeout + self._net.handshake_timeout,
        )
        return await asyncio.wait_for(link.ready, self._net.handshake_timeout + 1.0)

    async def _dial(self, node: str, route: NetworkRoute, replace: bool = False) -> Connection:
        host = route.host or Atom(node).host
        use_tls = route.tls if route.tls is not None else self._cm is not None
        cookie = route.cookie if route.cookie is not None else self._cookie

        def machine(tls: TLSDetails) -> DialerHandshake:
            return DialerHandshake(
                node_name=self._name,
                creation=self._creation,
                peer_name=node,
                cookie=cookie,
                flags=int(self._net.flags),
                max_message_size=self._net.max_message_size,
                local_cert_fp=tls.local_fp,
                peer_cert_fp=tls.peer_fp,
                replace=replace,
            )

        done = await self._open_link(host, route.port, use_tls, host, machine)
        conn = self._conns.get(node)
        if conn is None:
            raise ErrNoConnection(f"connection to {node} closed right after the handshake")
        if (
            isinstance(done, HandshakeComplete)
            and done.pool_size > 1
            and conn.done.connection_id == done.connection_id
        ):
            # The connection is usable now; the other pool links join in the
            # background, at once or once it is busy (order bytes stick to
            # the link they first used, so a late join never reorders a
            # stream). Each join re-reads the cert manager: a pool link
            # dialled after a rotation presents the new certificate.
            def grow() -> None:
                for _ in range(done.pool_size - 1):
                    join = self._join_machine(node, cookie, done)
                    task = asyncio.ensure_future(
                        self._open_link(host, route.port, use_tls, host, join)
                    )
                    self._joins[task] = node
                    conn.joining += 1
                    task.add_done_callback(self._join_done(conn))

            if self._net.pool_on_demand:
                conn.grow = grow
            else:
                grow()
        return conn

    def _grow(self, conn: Connection) -> None:
        """Loop thread: the connection got busy; open its other pool links."""
        grow, conn.grow = conn.grow, None
        if grow is not None and not conn.draining and not conn.closed and not self._stopped:
            log.info("%s: connection to %s is busy; growing its pool", self._name, conn.peer)
            grow()

    def _join_done(self, conn: Connection) -> Callable[[asyncio.Future[Any]], None]:
        def done(task: asyncio.Future[Any]) -> None:
            self._joins.pop(task, None)
            conn.joining -= 1
            if conn.draining and not conn.closed:
                self._drain_progress(conn)
            if task.cancelled() or task.exception() is None:
                return
            # A join that lost the race with its connection's end is expected.
            gone = self._stopped or conn.draining or conn.closed
            log.log(
                logging.INFO if gone else logging.WARNING,
                "%s: pool link to %s failed: %s",
                self._name,
                conn.peer,
                task.exception(),
            )

        return done

    def _join_machine(
        self, node: str, cookie: str, done: HandshakeComplete
    ) -> Callable[[TLSDetails], JoinHandshake]:
        def machine(tls: TLSDetails) -> JoinHandshake:
            return JoinHandshake(
                node_name=self._name,
                peer_name=node,
                connection_id=done.connection_id,
                cookie=cookie,
                local_cert_fp=tls.local_fp,
                peer_cert_fp=tls.peer_fp,
            )

        return machine

    # --- outbound (process threads) -----------------------------------------------------

    @property
    def _dial_budget(self) -> float:
        """How long a caller waits for a dial: connect, TLS and handshake, with margin."""
        return self._net.connect_timeout + 2 * self._net.handshake_timeout + 5.0

    def _connection(self, node: str) -> Connection:
        conn = self._conns.get(node)
        if conn is not None and not conn.closed and not conn.draining:
            return conn
        try:
            return self._lt.run(self._connect(node), timeout=self._dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot connect to {node}: {exc}") from exc

    def _send_frame(
        self, node: str, frame: fr.Frame, from_loop: bool = False, order: int | None = None
    ) -> None:
        if order is None:
            order = fr.frame_order(frame)
        self._send_data(str(node), self._encoder.encode_frame(frame, order=order), order, from_loop)

    def _ready(self, node: str, order: int) -> tuple[Connection, LinkProtocol, BatchWriter] | None:
        """The write path's common case: the connection is current and ``order`` has its link."""
        conn = self._conns.get(node)
        if conn is None or conn.draining or conn.closed:
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
            limit = ready[0].done.peer_max_message_size
            if limit and len(data) > limit:
                raise fr.too_large(len(data), limit)
            try:
                ready[2].write(data)
            except ErrNoConnection:
                pass
            else:
                self._wrote(ready[0], ready[1])
                return
        for _ in range(3):
            conn = self._owing.get(node)  # a reply owed on a connection that is closing
            if conn is None:
                conn = self._conns.get(node) if from_loop else self._connection(node)
            if conn is None:
                raise ErrNoConnection(f"not connected to {node}")
            limit = conn.done.peer_max_message_size
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
                if conn.draining:
                    continue  # closed or handed over meanwhile: the next one takes it
                raise
            self._wrote(conn, link)
            return
        raise ErrNoConnection(f"connection to {node} keeps closing")

    def _wrote(self, conn: Connection, link: LinkProtocol) -> None:
        """Count a frame out; a busy connection opens the rest of its pool."""
        link.messages_out += 1
        if conn.grow is not None and not conn.growing and link.messages_out >= POOL_GROW_AFTER:
            conn.growing = True
            with contextlib.suppress(ErgoError):  # stopping: no pool to grow
                self._lt.call_soon(self._grow, conn)

    def send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        order = 1 + from_pid.id % 255  # fr.order_byte, inline: this runs per message
        node = to.node  # an Atom is a str: it finds the connection without a copy
        # The common case (as in _send_data): the sender's link is up. The
        # message goes to its writer as an item, so that a burst from one
        # process to one recipient leaves as one batch frame.
        ready = self._ready(node, order)
        if ready is not None:
            conn, link, writer = ready
            limit = conn.done.peer_max_message_size
            entry, item = self._encoder.send_item(from_pid, to, message, order, limit)
            try:
                writer.write_item(entry, order, item, fr.send_run, len(entry[3]) + 16)
            except ErrNoConnection:
                pass  # closed meanwhile: nothing was written, go the general way
            else:
                self._wrote(conn, link)
                return
        self._send_data(node, self._encoder.encode_send(from_pid, to, message, order), order)

    def call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        code = _CALL_CODES.get(type(to))
        if code is None:
            raise ErrIncorrect(f"cannot call {to!r}")
        order = fr.order_byte(from_pid.id)
        data = self._encoder.encode_call(code, from_pid, to, ref, request, order)
        self._send_data(to.node, data, order)

    def reply(
        self, from_pid: PID, to: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
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
                        self._lt.call_soon(self._replies_written, to.node)

    def link(self, from_pid: PID, target: RemoteTarget) -> None:
        self._send_frame(target.node, fr.Link(from_pid, target))

    def unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        self._send_frame(target.node, fr.Unlink(from_pid, target))

    def monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        self._send_frame(target.node, fr.Monitor(from_pid, target, ref))

    def demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        self._send_frame(target.node, fr.Demonitor(from_pid, target, ref))

    def exit(
        self, from_target: RemoteTarget, to: PID, reason: Any, ended: PID | None = None
    ) -> None:
        order = fr.order_byte(ended.id) if ended is not None else None
        self._send_frame(to.node, fr.Exit(from_target, to, reason), order=order)

    def down(
        self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any, ended: PID | None = None
    ) -> None:
        order = fr.order_byte(ended.id) if ended is not None else None
        self._send_frame(to.node, fr.DownFrame(to, from_target, ref, reason), order=order)

    def spawn(
        self,
        from_pid: PID,
        node: str,
        name: str,
        args: tuple[Any, ...],
        options: ProcessOptions,
        register: str = "",
    ) -> PID:
        ref = Ref(self._name, random_ref_id(), self._creation)

        async def request() -> PID:
            fut: asyncio.Future[PID] = asyncio.get_running_loop().create_future()
            self._spawns[ref] = (node, fut)
            try:
                await self._connect(node)
                self._send_frame(
                    node,
                    fr.SpawnRequest(
                        from_pid, ref, name, register, args, options.link_parent, options.env
                    ),
                    from_loop=True,
                )
                return await fut
            finally:
                self._spawns.pop(ref, None)

        return self._lt.run(request(), timeout=self._net.connect_timeout + 15.0)

    def connect(self, node: str) -> None:
        self._connection(node)

    @property
    def core_pid(self) -> PID:
        return self._router.pid

    def network(self) -> Network:
        return self

    # --- Network (user-facing) ----------------------------------------------------------

    def get_node(self, name: str) -> RemoteNode:
        conn = self._connection(name)
        return _RemoteNode(self, conn)

    def nodes(self) -> list[str]:
        return sorted(self._conns)

    def info(self, name: str) -> dict[str, Any]:
        conn = self._conns.get(name)
        if conn is None:
            raise ErrNoConnection(f"not connected to {name}")
        links = [_link_info(link) for link in conn.links]
        first = links[0]  # the link the handshake made; joins may be on newer certs
        return {
            "peer": conn.peer,
            "peer_creation": conn.done.peer_creation,
            "peer_version": conn.done.peer_version,
            "connection_id": conn.done.connection_id,
            "dialed": conn.dialed,
            "identity_verified": bool(
                first["peer_cert_fingerprint"] is not None
                and self._net.verify_node_identity
                and not (conn.dialed and self._net.insecure_skip_verify)
            ),
            **{k: v for k, v in first.items() if k not in _PER_LINK_ONLY},
            "pool_links": len(conn.links),
            "links": links,
            "messages_in": sum(link["messages_in"] for link in links),
            "messages_out": sum(link["messages_out"] for link in links),
        }

    def add_route(self, match: str, route: Any, weight: int = 0) -> None:
        if not isinstance(route, NetworkRoute):
            raise ErrIncorrect("route must be a gen.NetworkRoute")
        try:
            pattern = re.compile(match)
        except re.error as exc:
            raise ErrIncorrect(f"bad route pattern {match!r}: {exc}") from exc
        with self._routes_lock:
            if any(p.pattern == match for p, _, _ in self._routes):
                raise ErrTaken(f"a route for {match!r} exists")
            self._routes.append((pattern, route, weight))

    def remove_route(self, match: str) -> None:
        with self._routes_lock:
            self._routes = [r for r in self._routes if r[0].pattern != match]

    def disconnect(self, name: str) -> None:
        """Close the connection to ``name`` gracefully; returns once it is closed.

        Both sides stop sending, and what either had sent is delivered first.
        Links and monitors towards ``name`` then fire and pending calls fail
        (``gen.ErrNoConnection``), as on any lost connection; the next send
        connects again.
        """
        name = str(name)

        async def close() -> None:
            conn = self._conns.get(name)
            if conn is not None:
                self._start_drain(conn, replaced=False, why="disconnect()")
            for old in list(self._draining.get(name, ())):
                await self._await_drained(old)

        self._lt.run(close(), timeout=self._drain_timeout + 5.0)

    async def _replace(self, name: str, old: Connection) -> None:
        """Dial a replacement for ``old``; done when it, or the peer's own, took over."""
        for attempt in range(3):
            try:
                await self._dial_any(name, replacing=old)
                return
            except ErrNoConnection:
                current = self._conns.get(name)
                if current is not None and current is not old:
                    return  # the peer's replacement won the tie-break
                if current is None or attempt == 2:
                    raise
                # Refused as simultaneous while the peer's reconnect was under
                # way, and theirs did not replace ours after all: ask again.
                await asyncio.sleep(0.05 * (attempt + 1))

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

        async def renew() -> None:
            old = self._conns.get(name)
            if old is None:
                await self._connect(name)
                return
            pending = self._replacing.get(name)
            if pending is not None:
                await asyncio.shield(pending)
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._replacing[name] = fut
            try:
                await self._replace(name, old)
                fut.set_result(None)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()
                raise
            finally:
                # No longer "dialling" once our connection is up (or failed):
                # the peer's own reconnect must not be refused as simultaneous.
                del self._replacing[name]
            await self._await_drained(old)  # the peer has switched too; the old one is gone

        try:
            self._lt.run(renew(), timeout=self._dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot reconnect to {name}: {exc}") from exc


_PER_LINK_ONLY = frozenset({"address", "messages_in", "messages_out"})


def _link_info(link: LinkProtocol) -> dict[str, Any]:
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
    def __init__(self, backend: TCPBackend, conn: Connection) -> None:
        self._backend = backend
        self._conn = conn

    @property
    def name(self) -> Atom:
        return Atom(self._conn.peer)

    @property
    def creation(self) -> int:
        return self._conn.done.peer_creation

    def spawn(self, name: str, *args: Any, options: ProcessOptions | None = None) -> PID:
        options = _node_spawn_options(options)
        return self._backend.spawn(self._backend.core_pid, self._conn.peer, name, args, options)

    def spawn_register(
        self, register: str, name: str, *args: Any, options: ProcessOptions | None = None
    ) -> PID:
        """Spawn ``name`` on the peer and register the process there as ``register``."""
        options = _node_spawn_options(options)
        return self._backend.spawn(
            self._backend.core_pid, self._conn.peer, name, args, options, register
        )

    def disconnect(self) -> None:
        self._backend.disconnect(self._conn.peer)
