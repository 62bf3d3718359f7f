"""The dialing side: routes, dials, pool joins and reconnects (loop thread).

Where a node is found: static routes (``network.add_route``) first, by
weight, then the registrar. A dial tries each route in turn; a refusal as
``"simultaneous"`` or ``"name taken"`` means the peer's own dial won, and
that connection is used. One dial per peer at a time: concurrent callers
share it (single flight), and likewise one reconnect per peer.

A connection is a pool of links: the first one carries the handshake, the
others join once the connection is busy (``network.pool_on_demand``) or at
once. Every dial and every join takes the cert manager's *current* client
context, so a link dialled after a rotation presents the new certificate.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol, TypeVar

from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoConnection,
    ErrNoRoute,
    ErrTaken,
    HandshakeRejected,
)
from ergo_py.gen.identifiers import Atom
from ergo_py.gen.options import NetworkRoute
from ergo_py.gen.registrar import Registrar, Route
from ergo_py.lib.logs import fields
from ergo_py.net.handshake import (
    DialerHandshake,
    HandshakeComplete,
    JoinComplete,
    JoinHandshake,
)
from ergo_py.net.link import LinkOwner, LinkProtocol
from ergo_py.net.linkbase import TLSDetails
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.retry import Backoff, retry_until_async
from ergo_py.net.tls import dial_tls
from ergo_py.node.connections import Connection, ConnectionOwner, ConnectionTable, ConnState
from ergo_py.node.context import NodeContext

log = logging.getLogger(__name__)
_limited = LogLimiter(log)  # a peer that keeps refusing us could flood the log

T = TypeVar("T")


async def _single_flight(
    flights: dict[str, asyncio.Future[T]], key: str, work: Callable[[], Awaitable[T]]
) -> T:
    """``work()``'s result, shared by every caller for ``key`` while it runs."""
    pending = flights.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    flights[key] = fut
    try:
        result = await work()
        fut.set_result(result)
        return result
    except BaseException as exc:
        fut.set_exception(exc)
        fut.exception()  # retrieved: nobody else may be waiting
        raise
    finally:
        del flights[key]


class _StaticRoute(NamedTuple):
    pattern: re.Pattern[str]
    route: NetworkRoute
    weight: int


class DialerOwner(ConnectionOwner, LinkOwner, Protocol):
    """The network backend: it owns the links the dialer opens."""


class Dialer:
    """How one node reaches the others (routes, dials, pools); loop thread unless noted."""

    def __init__(
        self,
        owner: DialerOwner,
        table: ConnectionTable,
        ctx: NodeContext,
        *,
        registrar: Callable[[], Registrar | None],
    ) -> None:
        self._owner = owner
        self._table = table
        self._ctx = ctx
        self._registrar = registrar
        self._routes: list[_StaticRoute] = []
        self._routes_lock = threading.Lock()  # add_route comes from any thread
        self._dialing: dict[str, asyncio.Future[Connection]] = {}
        self._replacing: dict[str, asyncio.Future[None]] = {}
        self._joins: dict[asyncio.Future[Any], str] = {}

    def pending(self, peer: str) -> bool:
        """Whether we are dialling ``peer`` (for the simultaneous-connect tie-break)."""
        return peer in self._dialing or peer in self._replacing

    def cancel_joins(self, peer: str | None = None) -> None:
        """Stop pool joins under way (to ``peer``, or all of them)."""
        for task, node in list(self._joins.items()):
            if peer is None or node == peer:
                task.cancel()

    def add_route(self, match: str, route: Any, weight: int = 0) -> None:
        if not isinstance(route, NetworkRoute):
            raise ErrIncorrect("route must be a gen.NetworkRoute")
        try:
            pattern = re.compile(match)
        except re.error as exc:
            raise ErrIncorrect(f"bad route pattern {match!r}: {exc}") from exc
        with self._routes_lock:
            if any(r.pattern.pattern == match for r in self._routes):
                raise ErrTaken(f"a route for {match!r} exists")
            self._routes.append(_StaticRoute(pattern, route, weight))

    def remove_route(self, match: str) -> None:
        with self._routes_lock:
            kept = [r for r in self._routes if r.pattern.pattern != match]
            if len(kept) == len(self._routes):
                raise ErrNoRoute(f"no route for {match!r}")
            self._routes = kept

    def resolve_static(self, node: str) -> list[NetworkRoute]:
        with self._routes_lock:
            routes = sorted(self._routes, key=lambda r: -r.weight)
        return [r.route for r in routes if r.pattern.fullmatch(node)]

    async def _routes_for(self, node: str) -> list[NetworkRoute]:
        static = self.resolve_static(node)
        if static:
            return static
        reg = self._registrar()
        if reg is None:
            raise ErrNoRoute(f"no route to {node}")
        return [self._route_of(r) for r in await reg.resolve(node)]

    @staticmethod
    def _route_of(r: Route) -> NetworkRoute:
        return NetworkRoute(host=r.host, port=r.port, tls=r.tls)

    async def connect(self, node: str) -> Connection:
        node = str(node)
        conn = self._table.conns.get(node)
        if conn is not None:
            return conn
        for old in list(self._table.draining.get(node, ())):
            if not old.replaced:
                # Closed on purpose: let the peer finish forgetting it first,
                # or our new dial would meet the old connection there.
                await self._table.await_drained(old)
        conn = self._table.conns.get(node)
        if conn is not None:
            return conn
        if node == self._ctx.name:
            raise ErrIncorrect("a node cannot connect to itself")
        return await _single_flight(self._dialing, node, lambda: self._dial_any(node))

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
                    conn = await self._table.await_incoming(node, replacing)
                    if conn is not None:
                        return conn
                errors.append(f"rejected: {exc.reason}")
            except (TimeoutError, OSError, ssl.SSLError, ErgoError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        why = "; ".join(errors) or "no routes"
        cm = self._ctx.cert_manager
        mine = cm.state() if cm is not None else None
        _limited.log(
            logging.WARNING,
            (self._ctx.name, "dial", node),
            "%s: cannot connect to %s: %s%s",
            self._ctx.name,
            node,
            why,
            f" (our certificate {mine.certificate.fingerprint[:16]}, version {mine.version})"
            if mine is not None
            else "",
            extra=fields(self._ctx.name, node, mine.certificate.fingerprint if mine else None),
        )
        raise ErrNoConnection(f"cannot connect to {node}: {why}")

    async def _open_link(
        self,
        host: str,
        port: int,
        use_tls: bool,
        server_hostname: str,
        machine: Callable[[TLSDetails], DialerHandshake | JoinHandshake],
    ) -> HandshakeComplete | JoinComplete:
        """Dial one link and run its handshake; the TLS context is the manager's current one."""
        net = self._ctx.net
        ssl_ctx, sni = dial_tls(
            self._ctx.cert_manager,
            net.insecure_skip_verify,
            use_tls,
            server_hostname,
            f"{host}:{port}",
        )

        def factory() -> LinkProtocol:
            return LinkProtocol(
                self._owner,
                machine,
                handshake_timeout=net.handshake_timeout,
                max_message_size=net.max_message_size,
                dialer=True,
                keepalive=net.keepalive_period,
            )

        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            _, link = await asyncio.wait_for(
                loop.create_connection(
                    factory,
                    host,
                    port,
                    ssl=ssl_ctx,
                    server_hostname=sni,
                    ssl_handshake_timeout=net.handshake_timeout if ssl_ctx is not None else None,
                ),
                net.connect_timeout + net.handshake_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # No link was made: the TCP connect or the TLS handshake failed.
            report = getattr(self._owner, "dial_failed", None)
            if report is not None:
                report(exc, loop.time() - started)
            raise
        return await asyncio.wait_for(link.ready, net.handshake_timeout + 1.0)

    async def _dial(self, node: str, route: NetworkRoute, replace: bool = False) -> Connection:
        host = route.host or Atom(node).host
        use_tls = route.tls if route.tls is not None else self._ctx.cert_manager is not None
        cookie = route.cookie if route.cookie is not None else self._ctx.cookie

        def machine(tls: TLSDetails) -> DialerHandshake:
            return DialerHandshake(
                node_name=self._ctx.name,
                creation=self._ctx.creation,
                peer_name=node,
                cookie=cookie,
                flags=int(self._ctx.net.flags),
                max_message_size=self._ctx.net.max_message_size,
                local_cert_fp=tls.local_fp,
                peer_cert_fp=tls.peer_fp,
                replace=replace,
            )

        done = await self._open_link(host, route.port, use_tls, host, machine)
        conn = self._table.conns.get(node)
        if conn is None:
            raise ErrNoConnection(f"connection to {node} closed right after the handshake")
        if (
            isinstance(done, HandshakeComplete)
            and done.pool_size > 1
            and conn.handshake.connection_id == done.connection_id
        ):
            # The connection is usable now; the other pool links join in the
            # background, at once or once it is busy (order bytes stick to
            # the link they first used, so a late join never reorders a
            # stream). Each join re-reads the cert manager: a pool link
            # dialled after a rotation presents the new certificate.
            def grow() -> None:
                for _ in range(done.pool_size - 1):
                    join = self._join_machine(node, cookie, done)
                    task = self._ctx.lt.spawn(
                        self._open_link(host, route.port, use_tls, host, join)
                    )
                    self._joins[task] = node
                    conn.joining += 1
                    task.add_done_callback(self._join_done(conn))

            if self._ctx.net.pool_on_demand:
                conn.grow = grow
            else:
                grow()
        return conn

    def grow(self, conn: Connection) -> None:
        """Loop thread: the connection got busy; open its other pool links."""
        grow, conn.grow = conn.grow, None
        if grow is not None and conn.state is ConnState.CURRENT and not self._owner.stopped:
            log.info("%s: connection to %s is busy; growing its pool", self._ctx.name, conn.peer)
            grow()

    def _join_done(self, conn: Connection) -> Callable[[asyncio.Future[Any]], None]:
        def done(task: asyncio.Future[Any]) -> None:
            self._joins.pop(task, None)
            conn.joining -= 1
            if conn.closing and not conn.ended:
                self._table.drain_progress(conn)
            if task.cancelled() or task.exception() is None:
                return
            # A join that lost the race with its connection's end is expected.
            gone = self._owner.stopped or conn.state is not ConnState.CURRENT
            log.log(
                logging.INFO if gone else logging.WARNING,
                "%s: pool link to %s failed: %s",
                self._ctx.name,
                conn.peer,
                task.exception(),
            )

        return done

    def _join_machine(
        self, node: str, cookie: str, done: HandshakeComplete
    ) -> Callable[[TLSDetails], JoinHandshake]:
        def machine(tls: TLSDetails) -> JoinHandshake:
            return JoinHandshake(
                node_name=self._ctx.name,
                peer_name=node,
                connection_id=done.connection_id,
                cookie=cookie,
                local_cert_fp=tls.local_fp,
                peer_cert_fp=tls.peer_fp,
            )

        return machine

    async def _replace(self, name: str, old: Connection) -> None:
        """Dial a replacement for ``old``; done when it, or the peer's own, took over."""

        async def attempt() -> None:
            try:
                await self._dial_any(name, replacing=old)
            except ErrNoConnection:
                current = self._table.conns.get(name)
                if current is not None and current is not old:
                    return  # the peer's replacement won the tie-break
                raise

        # Refused as simultaneous while the peer's reconnect was under way, and
        # theirs did not replace ours after all: ask again (unless ours is gone).
        await retry_until_async(
            None,
            attempt,
            (ErrNoConnection,),
            retry_if=lambda exc: self._table.conns.get(name) is not None,
            backoff=Backoff(0.05, 0.1),
            attempts=3,
        )

    async def reconnect(self, name: str) -> None:
        """Loop thread: ``network.reconnect``'s work; done once both sides switched."""
        old = self._table.conns.get(name)
        if old is None:
            await self.connect(name)
            return
        sharing = name in self._replacing  # a reconnect is under way: wait for it
        # Out of _replacing once our connection is up (or failed): the peer's
        # own reconnect must not be refused as simultaneous after that.
        await _single_flight(self._replacing, name, lambda: self._replace(name, old))
        if not sharing:
            await self._table.await_drained(old)  # the peer has switched too: the old one is gone
