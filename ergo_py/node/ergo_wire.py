"""The "ergo" dialect of the network: connections to Go Ergo nodes, beside our own.

An acceptor made with ``gen.AcceptorOptions(protocol="ergo")`` takes Go
nodes; a static route ``gen.NetworkRoute(protocol="ergo")`` dials them. The
backend (``node/network.py``) hands every operation on such a peer here;
everything else about the node is the same.

What differs from our own protocol, and why:

* TLS is Ergo's: the acceptor serves the cert manager's certificate and asks
  for none (Go's dialer presents none); our dialer verifies the Go node's
  certificate with the cert manager's root CAs (unless
  ``insecure_skip_verify``). Rotation takes effect at the next connection.
* No graceful close: Ergo has none, so a disconnect is a TCP close and what
  was in flight may be lost; links and monitors fire as on any lost link.
* A link or monitor is a request the peer answers (``MessageResult``); when
  a Go process ends, its node sends one "terminated" packet and we fan it out
  to our holders, as Ergo's core does (``node/ergo_watch.py``).
* Remote spawn is a request answered with the PID (``node/ergo_spawn.py``).
* Ergo's pool (``node/ergo_pool.py``): a connection has several TCP links;
  a packet goes on the link its order byte picks (as Go sends), so each
  sender keeps its order; a lost link of a connection we dialled is re-joined
  in its place, as Go does, and the connection stays up.

Thread safety: operations come from process threads; connections, links and
what arrives live on the node's loop thread.

Here: routes, acceptors, dials, messages and calls, and what arrives; the
pool, links and monitors, and spawn are the modules named above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoConnection,
    ErrTimeout,
)
from ergo_py.gen.identifiers import PID, Atom, Ref, random_ref_id
from ergo_py.gen.node import NodeRouter, RemoteTarget
from ergo_py.gen.options import AcceptorOptions, NetworkRoute
from ergo_py.net.ergo import enp, spawn
from ergo_py.net.ergo.handshake import (
    FLAGS_ENABLE,
    DialerMachine,
    Established,
    Joined,
    JoinMachine,
    Local,
)
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.tls import dial_tls
from ergo_py.node.context import NodeContext
from ergo_py.node.ergo_acceptor import ErgoAcceptor
from ergo_py.node.ergo_link import ErgoLink
from ergo_py.node.ergo_pool import ErgoConnection, Parked
from ergo_py.node.ergo_spawn import ErgoSpawn
from ergo_py.node.ergo_watch import ErgoWatches
from ergo_py.node.network_view import PER_LINK_ONLY, link_info
from ergo_py.node.spawn import RemoteSpawn

log = logging.getLogger(__name__)
_limited = LogLimiter(log)

PROTOCOL = "ergo"


def _note(level: int, fmt: str, *args: Any) -> None:
    """A log line a peer can cause: rate-limited per format and the types of its arguments."""
    _limited.log(level, (fmt, *(type(a) for a in args)), fmt, *args)


class ErgoOwner(Protocol):
    """What the dialect needs from the backend around it."""

    @property
    def stopped(self) -> bool: ...

    def node_down(self, peer: str, reason: ErrNoConnection) -> None: ...


class ErgoWire:
    """Connections in Ergo's dialect: routes, acceptors, dials and the traffic."""

    def __init__(
        self,
        owner: ErgoOwner,
        router: NodeRouter,
        ctx: NodeContext,
        *,
        offers: RemoteSpawn,
    ) -> None:
        self._owner = owner
        self._router = router
        self._ctx = ctx
        self.conns: dict[str, ErgoConnection] = {}
        self._links: set[ErgoLink] = set()
        self._routes: list[tuple[re.Pattern[str], NetworkRoute, int]] = []
        self._routes_lock = threading.Lock()
        self._dialing: dict[str, asyncio.Future[ErgoConnection]] = {}
        self.acceptors: list[ErgoAcceptor] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.spawns = ErgoSpawn(self, router, offers, ctx)
        self.watches = ErgoWatches(self, router, ctx.lt)

    # --- who speaks it -------------------------------------------------------------------

    def add_route(self, match: str, route: NetworkRoute, weight: int) -> None:
        try:
            pattern = re.compile(match)
        except re.error as exc:
            raise ErrIncorrect(f"bad route pattern {match!r}: {exc}") from exc
        with self._routes_lock:
            self._routes.append((pattern, route, weight))
            self._routes.sort(key=lambda r: -r[2])

    def remove_route(self, match: str) -> bool:
        """Forget the routes added under ``match``; whether there was one."""
        with self._routes_lock:
            kept = [r for r in self._routes if r[0].pattern != match]
            removed = len(kept) != len(self._routes)
            self._routes = kept
        return removed

    def _route(self, node: str) -> NetworkRoute | None:
        with self._routes_lock:
            return next((r for p, r, _ in self._routes if p.fullmatch(node)), None)

    def wants(self, node: str) -> bool:
        """Whether ``node`` is (to be) reached in this dialect: connected, or routed so."""
        return node in self.conns or (bool(self._routes) and self._route(node) is not None)

    def peers(self) -> list[str]:
        return list(self.conns)

    # --- acceptors (loop thread) ---------------------------------------------------------

    async def listen(self, options: AcceptorOptions) -> ErgoAcceptor:
        acc = ErgoAcceptor(
            self,
            options,
            self._ctx,
        )
        await acc.bound()
        self.acceptors.append(acc)
        return acc

    def accepted(self, link: ErgoLink) -> None:
        self._links.add(link)

    def join(self, peer: str, connection_id: str) -> str | None:
        conn = self.conns.get(peer)
        if conn is None or conn.dialed or conn.info.connection_id != connection_id:
            return f"no connection {connection_id} of {peer} to join"
        if len(conn.links) >= self.pool_size():
            return f"the pool of {peer} is full"
        return None

    def local(self, cookie: str | None = None) -> Local:
        """Who we are in a handshake (``cookie``: a route's or acceptor's own, if it has one)."""
        return Local(
            self._ctx.name,
            self._ctx.creation,
            self._ctx.cookie if cookie is None else cookie,
            self._ctx.net.max_message_size,
            FLAGS_ENABLE | self.spawns.flags,  # remote spawn when the node takes it
        )

    def pool_size(self) -> int:
        return max(1, min(255, self._ctx.net.pool_size))

    def admit(self, peer: str, creation: int) -> str | None:
        if peer == self._ctx.name:
            return "name taken"
        old = self.conns.get(peer)
        if old is not None:
            if old.info.creation != creation:
                self._drop(old, ErrNoConnection(f"{peer} restarted"))
            elif old.dialed:  # both dialled at once: ours stands
                return f"already connected to {peer}"
            else:
                # A Go node dials only when it holds no connection to us, so the
                # one it made before is gone on its side, whatever links of it
                # still look open here (Go does not close a pool link it failed
                # to join to a connection it had just ended).
                self._drop(
                    old, ErrNoConnection(f"{peer} dialled again: its old connection is gone")
                )
        return None

    # --- dialing -------------------------------------------------------------------------

    def connection(self, node: str, from_loop: bool = False) -> ErgoConnection:
        """The connection to ``node``, dialled if need be (not from the loop thread)."""
        conn = self.conns.get(node)
        if conn is not None:
            return conn
        if from_loop:
            raise ErrNoConnection(f"not connected to {node}")
        try:
            return self._ctx.lt.run(self._connect(node), timeout=self._ctx.dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot connect to {node}: {exc}") from exc

    async def _connect(self, node: str) -> ErgoConnection:
        conn = self.conns.get(node)
        if conn is not None:
            return conn
        pending = self._dialing.get(node)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[ErgoConnection] = asyncio.get_running_loop().create_future()
        self._dialing[node] = fut
        try:
            conn = await self._dial(node)
            fut.set_result(conn)
            return conn
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            del self._dialing[node]

    async def _dial(self, node: str) -> ErgoConnection:
        route = self._route(node)
        if route is None:
            raise ErrNoConnection(f"no ergo route to {node}")
        host = route.host or Atom(node).host
        use_tls = route.tls if route.tls is not None else self._ctx.cert_manager is not None
        cookie = route.cookie if route.cookie is not None else self._ctx.cookie
        ssl_ctx, sni = dial_tls(
            self._ctx.cert_manager, self._ctx.net.insecure_skip_verify, use_tls, host, node
        )

        def machine(link: ErgoLink) -> DialerMachine:
            return DialerMachine(
                self.local(cookie), peer_name=node, peer_cert_sha1=link.peer_cert_sha1
            )

        try:
            await self._open(host, route.port, machine, ssl_ctx, sni)
        except (TimeoutError, OSError, ssl.SSLError, ErgoError) as exc:
            won = self.conns.get(node)  # the peer's own dial to us came up meanwhile: use it
            if won is not None:
                return won
            raise ErrNoConnection(f"cannot connect to {node} (ergo): {exc}") from exc
        conn = self.conns.get(node)
        if conn is None:
            raise ErrNoConnection(f"connection to {node} closed right after the handshake")
        dsns = conn.info.pool_dsn
        if not dsns:
            return conn

        def rejoin(dsn: str) -> Awaitable[bool]:
            return self._join(conn, dsn, ssl_ctx, sni, cookie)

        conn.rejoin = rejoin
        want = min(conn.info.pool_size, self.pool_size()) - 1
        # Joined before the first packet goes out, so no sender's packets
        # move to another link once they flow.
        await asyncio.gather(*(rejoin(dsns[(i + 1) % len(dsns)]) for i in range(want)))
        return conn

    async def _join(
        self,
        conn: ErgoConnection,
        dsn: str,
        ssl_ctx: ssl.SSLContext | None,
        sni: str | None,
        cookie: str,
    ) -> bool:
        """One further link of ``conn``'s pool, to an address the acceptor named (as Go)."""
        host, _, port = dsn.rpartition(":")
        host = host.strip("[]")

        def machine(link: ErgoLink) -> JoinMachine:
            to = Joined(conn.peer, conn.info.connection_id)
            return JoinMachine(self.local(cookie), to, peer_cert_sha1=link.peer_cert_sha1)

        try:
            await self._open(host, int(port), machine, ssl_ctx, sni)
            return True
        except (TimeoutError, OSError, ValueError, ssl.SSLError, ErgoError) as exc:
            _note(
                logging.WARNING,
                "%s: a pool link to %s (%s) failed: %s",
                self._ctx.name,
                conn.peer,
                dsn,
                exc,
            )
            return False

    async def _rejoin(self, conn: ErgoConnection, parked: Parked) -> None:
        """Re-join a lost link in ``parked``'s slot, trying each pool address once (as Go)."""
        assert conn.rejoin is not None
        dsns = list(conn.info.pool_dsn)
        random.shuffle(dsns)
        for dsn in dsns:
            if conn.closing or self.conns.get(conn.peer) is not conn:
                return
            if await conn.rejoin(dsn):
                log.info("%s: a lost pool link to %s re-joined", self._ctx.name, conn.peer)
                return
        if parked not in conn.links:
            return
        conn.remove(parked)
        if not conn.live:
            self._drop(conn, ErrNoConnection(f"connection to {conn.peer} lost: no link re-joined"))

    async def _open(
        self,
        host: str,
        port: int,
        machine: Callable[[ErgoLink], Any],
        ssl_ctx: ssl.SSLContext | None,
        sni: str | None,
    ) -> ErgoLink:
        """Dial one link and run its handshake (bounded); a link that fails is aborted."""
        _, link = await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(
                lambda: self._new_link(machine, dialer=True),
                host,
                port,
                ssl=ssl_ctx,
                server_hostname=sni if ssl_ctx is not None else None,
                ssl_handshake_timeout=self._ctx.net.handshake_timeout if ssl_ctx else None,
            ),
            self._ctx.net.connect_timeout + self._ctx.net.handshake_timeout,
        )
        try:
            await asyncio.wait_for(link.ready, self._ctx.net.handshake_timeout + 1.0)
        except BaseException:
            link.abort()
            raise
        return link

    def _new_link(self, machine: Callable[[ErgoLink], Any], *, dialer: bool) -> ErgoLink:
        link = ErgoLink(
            self,
            machine,
            dialer=dialer,
            handshake_timeout=self._ctx.net.handshake_timeout,
            max_message_size=self._ctx.net.max_message_size,
        )
        self._links.add(link)
        return link

    # --- links (loop thread) -------------------------------------------------------------

    def link_up(self, link: ErgoLink, result: Established | Joined) -> enp.Codec:
        if isinstance(result, Joined):
            conn = self.conns.get(result.peer)
            if conn is None or conn.closing or conn.info.connection_id != result.connection_id:
                raise ErrNoConnection(f"a pool link to {result.peer}: its connection is gone")
            conn.joined(link)
            log.debug("%s: pool link %d to %s", self._ctx.name, len(conn.links), result.peer)
            return conn.codec
        if link.dialer and result.peer in self.conns:
            raise ErrNoConnection(f"already connected to {result.peer}")
        codec = enp.Codec(
            self._ctx.name,
            self._ctx.creation,
            result.peer,
            result.creation,
            result.caches,
            link.max_message_size,
        )
        self.conns[result.peer] = ErgoConnection(result.peer, result, codec, (link,), link.dialer)
        tls = link.tls
        log.info(
            "%s: connected to Ergo node %s (%s, %s, peer cert %s)",
            self._ctx.name,
            result.peer,
            result.peer_version,
            tls.version if tls and tls.version else "plain TCP",
            tls.peer.fingerprint[:16] if tls and tls.peer else "-",
        )
        return codec

    def link_lost(self, link: ErgoLink, exc: BaseException | None) -> None:
        self._links.discard(link)
        for conn in list(self.conns.values()):
            if link not in conn.links:
                continue
            why = ErrNoConnection(f"connection to {conn.peer} lost: {exc or 'closed'}")
            if conn.closing or self._owner.stopped:
                self._drop(conn, why)
            elif conn.rejoin is not None:  # ours: re-join this one link, as Go's dialer does
                log.info(
                    "%s: a pool link to %s lost (%s); re-joining it", self._ctx.name, conn.peer, why
                )
                task = asyncio.get_running_loop().create_task(self._rejoin(conn, conn.park(link)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:  # accepted: the link leaves the pool (the dialer re-joins it)
                conn.remove(link)
                if not conn.live:
                    self._drop(conn, why)

    def _drop(self, conn: ErgoConnection, reason: ErrNoConnection) -> None:
        if self.conns.get(conn.peer) is conn:
            del self.conns[conn.peer]
        lost = conn.close(reason)
        if lost:
            log.info(
                "%s: %d packets to %s waited for a pool link: lost", self._ctx.name, lost, conn.peer
            )
        self.watches.connection_lost(conn.peer)
        self.spawns.connection_lost(conn.peer)
        log.info("%s: %s", self._ctx.name, reason)
        if not self._owner.stopped:
            self._owner.node_down(conn.peer, reason)

    def disconnect(self, node: str) -> None:
        async def close() -> None:
            conn = self.conns.get(node)
            if conn is not None:
                conn.close()
                gone = asyncio.gather(*(link.gone for link in conn.live))
                await asyncio.wait_for(gone, self._ctx.net.handshake_timeout)

        self._ctx.lt.run(close(), timeout=self._ctx.net.handshake_timeout + 5.0)

    def info(self, node: str) -> dict[str, Any] | None:
        conn = self.conns.get(node)
        if conn is None:
            return None
        live = conn.live
        first = link_info(live[0]) if live else {}  # the first link's TLS, as for our protocol
        return {
            "peer": conn.peer,
            "protocol": PROTOCOL,
            "peer_creation": conn.info.creation,
            "peer_version": conn.info.peer_version,
            "connection_id": conn.info.connection_id,
            "dialed": conn.dialed,
            "identity_verified": False,  # Ergo's handshake binds no certificate to a name
            **{k: v for k, v in first.items() if k not in PER_LINK_ONLY},
            "pool_links": len(live),
            "messages_in": sum(link.messages_in for link in live),
            "messages_out": sum(link.messages_out for link in live),
        }

    async def close(self) -> None:
        for acc in self.acceptors:
            acc.close()
        for conn in list(self.conns.values()):
            conn.closing = True
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        links = list(self._links)
        for link in links:
            link.close()
        if links:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*(link.gone for link in links)), 0.5)
        for link in list(self._links):
            link.abort()

    # --- outbound (process threads) ------------------------------------------------------

    def write(self, conn: ErgoConnection, data: bytes, from_loop: bool = False) -> None:
        if conn.limit and len(data) > conn.limit:
            from ergo_py.net.frames import too_large

            raise too_large(len(data), conn.limit)
        conn.write(data, from_loop)

    def send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        conn = self.connection(to.node)
        self.write(conn, conn.codec.send(from_pid, to, message))

    def call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        conn = self.connection(to.node)
        self.write(conn, conn.codec.request(from_pid, to, ref, request))

    def reply(
        self, from_pid: PID, to: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        conn = self.connection(to.node)
        try:
            data = conn.codec.response(from_pid, to, ref, value, error)
        except ErgoError as exc:
            if isinstance(exc, ErrNoConnection):
                raise
            data = conn.codec.response(from_pid, to, ref, None, exc)  # the caller learns why
        self.write(conn, data)

    def new_ref(self) -> Ref:
        return Ref(self._ctx.name, random_ref_id(), self._ctx.creation)

    # --- inbound (loop thread) -----------------------------------------------------------

    def link_events(self, link: ErgoLink, events: list[enp.Event]) -> None:
        run: list[tuple[PID, RemoteTarget, Any]] = []
        for event in events:
            if type(event) is enp.Send:
                run.append((event.from_, event.to, event.message))
                continue
            if run:
                self._route_sends(run)
                run = []
            try:
                self._dispatch(link, event)
            except ErgoError as exc:
                _note(
                    logging.INFO,
                    "%s: %s not delivered: %s",
                    self._ctx.name,
                    type(event).__name__,
                    exc,
                )
        if run:
            self._route_sends(run)

    def _route_sends(self, run: list[tuple[PID, RemoteTarget, Any]]) -> None:
        for _, error in self._router.route_sends(run):
            _note(
                logging.INFO,
                "%s: a message from an Ergo node not delivered: %s",
                self._ctx.name,
                error,
            )

    def _dispatch(self, link: ErgoLink, event: enp.Event) -> None:
        r = self._router
        if isinstance(event, enp.Request):
            r.route_call(event.from_, event.to, event.ref, event.message)
        elif isinstance(event, enp.Response):
            r.route_reply(event.from_, event.ref, event.value, event.error)
        elif isinstance(event, enp.ExitSignal):
            r.route_exit(event.from_, event.to, event.reason)
        elif isinstance(event, enp.Terminated):
            self.watches.terminated(event)
        elif isinstance(event, enp.Control):
            self._control(link, event.message)
        elif isinstance(event, enp.Unsupported):
            _note(logging.WARNING, "%s: %s", self._ctx.name, event.what)

    def _control(self, link: ErgoLink, message: Any) -> None:
        conn = self._conn_of(link)
        if isinstance(message, enp.Result):
            if conn is not None and self.spawns.answered(message, conn.peer):
                return
            self.watches.answered(message)
            return
        if isinstance(message, spawn.SpawnRequest):
            if conn is not None:
                self.spawns.requested(conn.peer, message)
            return
        if not isinstance(message, enp.LinkRequest):
            _note(
                logging.WARNING,
                "%s: an Ergo request we do not serve: %s",
                self._ctx.name,
                type(message).__name__,
            )
            return
        if conn is not None:
            self.watches.requested(conn, link, message)

    def _conn_of(self, link: ErgoLink) -> ErgoConnection | None:
        return next((c for c in self.conns.values() if link in c.links), None)
