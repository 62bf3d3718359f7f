"""The node's connections to its peers: the table, closing, and hand-over (loop thread).

A connection is the links to one peer node (a pool, see ``node/dialer.py``).
Its life: current (in :attr:`ConnectionTable.conns`) -> draining (a
``Close`` sent on every link, still reading until the peer's) -> closed.

Closing is a half-close per link, as TCP's FIN: a side that stops using a
connection puts a ``Close`` frame behind every frame it accepted on each
link and keeps reading until the peer's ``Close``; the link is done once
both crossed, so nothing either side sent is lost. A hand-over
(``reconnect``) installs the new connection first, drains the old one this
way, and holds frames arriving on the new one until the old one's last
frame is in, so no sender's stream is reordered by the switch. A connection
closed for good holds its Close until the replies to calls the peer made on
it have gone out (bounded), so a call in flight during ``disconnect`` gets
its answer.

Everything here runs on the node's loop thread, except reads of
:attr:`ConnectionTable.conns` and :attr:`ConnectionTable.owing` (single dict
look-ups) from process threads on the write path.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ergo_py.gen.errors import ErrNoConnection, ErrTaken
from ergo_py.lib.logs import fields
from ergo_py.net import frames as fr
from ergo_py.net.handshake import HandshakeComplete, JoinComplete
from ergo_py.net.link import LinkProtocol
from ergo_py.net.loop import wait_until
from ergo_py.node.context import NodeContext

log = logging.getLogger(__name__)

QUIET_CONNECTION = 2.0
"""Seconds a dialled-in connection is logged at DEBUG only (admin sessions come and go)."""


class ConnState(enum.Enum):
    """Where a connection is in its life (see :class:`Connection`)."""

    CURRENT = "current"  # the one in use: in ConnectionTable.conns
    OWING = "owing"  # closing for good; its Close held until owed replies are out
    DRAINING = "draining"  # Close sent on every link; reading until the peer's
    CLOSED = "closed"  # drained (or abandoned while draining): done
    DROPPED = "dropped"  # lost while current: nothing was drained


@dataclass
class Connection:
    """A connection to one peer node: its links and what the handshake said.

    Life (``state``): CURRENT -> [OWING ->] DRAINING -> CLOSED, or CURRENT ->
    DROPPED when a link is lost. ``replaced``: drained for a hand-over to a
    newer connection, so its end is not a node-down. ``peer_done``: everything
    the peer sent on it is in (its Close came on every link). ``held``:
    frames that arrived on this connection while the one it replaces still
    had frames on the way (``waiting``); they are dispatched once those are
    in, so no sender's stream is reordered by the switch. ``drained`` is set
    when it ends either way, for whoever waits for that.
    """

    peer: str
    handshake: HandshakeComplete
    links: list[LinkProtocol] = field(default_factory=list)
    dialed: bool = False
    state: ConnState = ConnState.CURRENT

    sticky: dict[int, LinkProtocol] = field(default_factory=dict)
    replaced: bool = False
    peer_done: bool = False
    held: list[tuple[LinkProtocol, list[fr.Frame] | bool]] | None = None
    waiting: set[int] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    joining: int = 0  # pool joins we dialled that have not settled yet
    grow: Callable[[], None] | None = None  # opens the pool's other links (on demand)
    growing: bool = False
    quiet: bool = False  # dialled in moments ago: its end is logged at DEBUG
    # node/trust.py's TrustEpoch: the material it was authenticated under (None: plain TCP)
    epoch: object = None

    @property
    def closing(self) -> bool:
        """Owing, draining, or closed after draining: no longer taking new frames."""
        return self.state in _CLOSING

    @property
    def ended(self) -> bool:
        """Closed or dropped: nothing more happens on it."""
        return self.state in _ENDED

    def pick(self, order: int) -> LinkProtocol:
        """The link for an order byte; the same one for as long as the connection lives.

        An order byte is bound to a link the first time it is used, so links
        that join later never reorder a sender's stream; they take new order
        bytes. (Order 0, unordered, may use any link.)
        """
        link = self.sticky.get(order)
        if link is None:
            links = self.links
            link = self.sticky.setdefault(order, links[order % len(links)])
        return link


_CLOSING = frozenset({ConnState.OWING, ConnState.DRAINING, ConnState.CLOSED})
_ENDED = frozenset({ConnState.CLOSED, ConnState.DROPPED})


class ConnectionOwner(Protocol):
    """What the table needs from the network backend that owns it."""

    @property
    def stopped(self) -> bool:
        """The node is stopping: no node-downs, no new connections."""

    def dispatch_all(self, link: LinkProtocol, frames: list[fr.Frame]) -> None:
        """Deliver frames (ones held back during a hand-over, in their turn)."""

    def owes_replies(self, peer: str) -> bool:
        """Whether calls ``peer`` made are still waiting for their reply here."""

    def node_down(self, peer: str, reason: ErrNoConnection) -> None:
        """The connection to ``peer`` is gone for good: links, monitors and calls learn it."""

    def connection_dropped(self, peer: str) -> None:
        """A connection to ``peer`` ended abruptly: what waited on it (joins, spawns) fails."""

    def connection_up(self, conn: Connection, replacing: bool) -> None:
        """A new connection is current (``replacing``: a hand-over); for events."""

    def connection_drained(self, peer: str, reason: str) -> None:
        """A connection finished closing (cleanly or abandoned); for events."""


class ConnectionTable:
    """The connections of one node, current and draining, and their links."""

    def __init__(self, owner: ConnectionOwner, ctx: NodeContext) -> None:
        self._owner = owner
        self._ctx = ctx
        # Never rebound: the write path holds on to the dicts themselves.
        self.conns: dict[str, Connection] = {}
        self.draining: dict[str, list[Connection]] = {}
        self.drained: dict[str, Connection] = {}  # closed, by id, for late joins
        self.owing: dict[str, Connection] = {}  # Close held until owed replies are out
        self.holding = 0  # connections whose frames are held behind an older one's
        self.links: set[LinkProtocol] = set()
        self.link_conn: dict[LinkProtocol, Connection] = {}
        self.arrived: dict[str, asyncio.Event] = {}

    def hold_frames(self, link: LinkProtocol, frames: list[fr.Frame]) -> bool:
        """Keep ``frames`` back if their connection waits for an older one (True then)."""
        if self.holding:
            conn = self.link_conn.get(link)
            if conn is not None and conn.held is not None:
                conn.held.append((link, frames))
                return True
        return False

    def check_new_peer(
        self, peer: str, creation: int, replace: bool = False, dialer: bool = False
    ) -> str | None:
        """The table's part of admitting a new connection (``node/admission.py``).

        ``"name taken"`` when a connection to the same incarnation of ``peer``
        is up and the new one (``dialer``: dialled by us) does not replace it.
        """
        if peer == self._ctx.name:
            return "name taken"
        existing = self.conns.get(peer)
        if (
            existing is not None
            and existing.handshake.peer_creation == creation
            and (existing.dialed or dialer)
            and not replace
        ):
            # One dial won already: the other lost the race and its side will
            # find the winner ("name taken" tells it so).
            return "name taken"
        # A connection the peer dialed earlier and dials again is one it has
        # dropped (its close may not have reached us yet): install replaces it.
        return None

    def by_id(self, connection_id: str) -> Connection | None:
        """A current or draining connection (a join may come after a hand-over)."""
        for conn in self.conns.values():
            if conn.handshake.connection_id == connection_id:
                return conn
        for queue in self.draining.values():
            for conn in queue:
                if conn.handshake.connection_id == connection_id:
                    return conn
        return self.drained.get(connection_id)

    def install(self, link: LinkProtocol, done: HandshakeComplete | JoinComplete) -> None:
        """A link came up (admitted): a new connection, a hand-over or a pool join.

        Raises ``gen.ErrTaken`` or ``gen.ErrNoConnection`` to refuse it: an
        accepted link was admitted half a round trip ago, and the connection
        it joins may be gone, or another one to that peer up, by now.
        """
        if isinstance(done, JoinComplete):
            conn = self.by_id(done.connection_id)
            if conn is None or conn.peer != done.peer_name:
                raise ErrNoConnection(f"join for unknown connection to {done.peer_name}")
            conn.links.append(link)
            self.links.add(link)
            self.link_conn[link] = conn
            _allow_batches(link, conn)
            if conn.state is not ConnState.CURRENT:  # on its way out: close it likewise
                link.send_close(conn.replaced)
            return
        old = self.conns.get(done.peer_name)
        replacing: Connection | None = None
        if old is not None:
            same = old.handshake.peer_creation == done.peer_creation
            if same and done.replace:
                replacing = old
            elif self.check_new_peer(done.peer_name, done.peer_creation, dialer=link.dialer):
                # admit()'s rule once more: another one came up since this was admitted
                raise ErrTaken(f"already connected to {done.peer_name}")
            else:
                why = "restarted" if not same else "replaced its connection"
                self.drop(old, ErrNoConnection(f"{done.peer_name} {why}"))
        conn = Connection(done.peer_name, done, [link], dialed=link.dialer)
        self.conns[done.peer_name] = conn
        self.links.add(link)
        self.link_conn[link] = conn
        _allow_batches(link, conn)
        if replacing is not None:
            self.start_drain(replacing, replaced=True, why="handed over to a new connection")
        self._hold_behind_draining(conn)
        tls = link.tls
        args = (
            self._ctx.name,
            "connection handed over to" if replacing is not None else "connected to",
            done.peer_name,
            tls.version if tls and tls.version else "plain TCP",
            tls.local_state.version if tls and tls.local_state else "-",
            tls.peer.fingerprint[:16] if tls and tls.peer else "-",
        )
        extra = fields(
            self._ctx.name, done.peer_name, tls.peer.fingerprint if tls and tls.peer else None
        )
        text = "%s: %s %s (%s, cert version %s, peer cert %s)"
        if link.dialer or replacing is not None:
            log.info(text, *args, extra=extra)
        else:
            # Dialled in: maybe a short admin session (ergo-py inspect, call). Its
            # coming and going is DEBUG; a peer still here a moment later is news.
            log.debug(text, *args, extra=extra)
            conn.quiet = True
            self._ctx.lt.loop.call_later(QUIET_CONNECTION, self._announce, conn, text, args, extra)
        self._owner.connection_up(conn, replacing is not None)
        ev = self.arrived.pop(done.peer_name, None)
        if ev is not None:
            ev.set()

    def link_peer_closed(self, link: LinkProtocol, replaced: bool) -> None:
        conn = self.link_conn.get(link)
        if conn is None:
            return
        if conn.held is not None:  # behind frames still held: handled in turn
            conn.held.append((link, replaced))
            return
        self._peer_closed(conn, replaced)

    def link_lost(self, link: LinkProtocol, exc: BaseException | None) -> None:
        self.links.discard(link)
        conn = self.link_conn.pop(link, None)
        if conn is None or conn.ended:
            return
        if conn.closing:
            if link in conn.links:
                conn.links.remove(link)
            if link.closed_cleanly:
                self.drain_progress(conn)
            else:
                why = f"connection to {conn.peer} lost while closing: {exc or 'closed early'}"
                self._abandon(conn, ErrNoConnection(why))
            return
        if link in conn.links:
            self.drop(conn, ErrNoConnection(f"connection to {conn.peer} lost: {exc or 'closed'}"))

    def drop(self, conn: Connection, reason: ErrNoConnection) -> None:
        if conn.ended:
            return
        conn.state = ConnState.DROPPED
        conn.drained.set()
        if self.conns.get(conn.peer) is conn:
            del self.conns[conn.peer]
        self._unhold(conn, dispatch=False)  # at most once: the node-down below says so
        for link in conn.links:
            link.close()
        self._owner.connection_dropped(conn.peer)
        log.log(logging.DEBUG if conn.quiet else logging.INFO, "%s: %s", self._ctx.name, reason)
        self._owner.node_down(conn.peer, reason)

    def _announce(
        self, conn: Connection, text: str, args: tuple[object, ...], extra: dict[str, object]
    ) -> None:
        """A dialled-in connection lasted ``QUIET_CONNECTION`` s: log it at INFO after all."""
        if not conn.ended:
            conn.quiet = False
            log.info(text + " (up %g s)", *args, QUIET_CONNECTION, extra=extra)

    async def await_incoming(
        self, node: str, replacing: Connection | None = None
    ) -> Connection | None:
        """The peer's connection to us that won over our dial (other than ``replacing``)."""
        conn = self.conns.get(node)
        if conn is not None and conn is not replacing:
            return conn
        ev = self.arrived.setdefault(node, asyncio.Event())
        await wait_until(ev.wait(), self._ctx.net.handshake_timeout)
        conn = self.conns.get(node)
        return conn if conn is not replacing else None

    def start_drain(self, conn: Connection, *, replaced: bool, why: str) -> None:
        """Stop sending on ``conn`` (Close on every link); keep reading until the peer's.

        Nothing either side had accepted is lost. ``replaced``: a newer
        connection carries on, so links, monitors and pending calls stay;
        otherwise the node-down follows once the peer's last frame is in.
        """
        if conn.state is not ConnState.CURRENT:
            return
        conn.replaced = replaced
        if self.conns.get(conn.peer) is conn:
            del self.conns[conn.peer]
        self.draining.setdefault(conn.peer, []).append(conn)
        log.info(
            "%s: closing connection to %s: %s",
            self._ctx.name,
            conn.peer,
            why,
            extra=fields(self._ctx.name, conn.peer),
        )
        if conn.timer is not None:  # waiting for the peer's replacement: it came
            conn.timer.cancel()
            conn.timer = None
        if not replaced and self._owner.owes_replies(conn.peer):
            # Calls the peer made are still running here: their replies go
            # out on this connection before our Close (a hand-over needs no
            # wait: replies take the new connection). Bounded, so that the
            # peer's own drain timer does not run out first.
            conn.state = ConnState.OWING
            self.owing[conn.peer] = conn
            conn.timer = self._ctx.lt.loop.call_later(self.reply_wait, self._close_links, conn)
            return
        self._close_links(conn)

    def _close_links(self, conn: Connection) -> None:
        """Put a Close on every link of ``conn`` and wait (bounded) for the peer's."""
        if conn.state is ConnState.OWING:
            if self.owing.get(conn.peer) is conn:
                del self.owing[conn.peer]
            if self._owner.owes_replies(conn.peer):
                log.warning(
                    "%s: closing the connection to %s with calls of its still running here "
                    "after %.1f s; their callers get gen.ErrNoConnection",
                    self._ctx.name,
                    conn.peer,
                    self.reply_wait,
                )
        conn.state = ConnState.DRAINING
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = self._ctx.lt.loop.call_later(self.drain_timeout, self._drain_expired, conn)
        for link in list(conn.links):
            link.send_close(conn.replaced)
        self.drain_progress(conn)

    def replies_written(self, peer: str) -> None:
        """Loop thread: the last reply owed to ``peer`` went out; send the held Close."""
        conn = self.owing.get(peer)
        if conn is not None and not self._owner.owes_replies(peer):
            self._close_links(conn)

    @property
    def drain_timeout(self) -> float:
        return self._ctx.net.handshake_timeout

    @property
    def reply_wait(self) -> float:
        """How long a Close waits for replies owed to the peer (half its drain timer)."""
        return self.drain_timeout / 2

    def _peer_closed(self, conn: Connection, replaced: bool) -> None:
        """A Close from the peer on one of ``conn``'s links (frames before it are in)."""
        if conn.ended:
            return
        if conn.closing:
            self.drain_progress(conn)
            return
        if not replaced:
            self.start_drain(conn, replaced=False, why=f"{conn.peer} closed it")
            return
        # The peer is handing over to a connection we have not seen come up
        # yet; it still reads this one, so keep sending here until it does.
        if conn.timer is None:
            conn.timer = self._ctx.lt.loop.call_later(
                self._ctx.net.connect_timeout + self._ctx.net.handshake_timeout,
                self._replacement_missing,
                conn,
            )

    def _replacement_missing(self, conn: Connection) -> None:
        conn.timer = None
        if conn.state is ConnState.CURRENT:
            why = "the peer's replacement connection did not arrive"
            self.start_drain(conn, replaced=False, why=why)

    def drain_progress(self, conn: Connection) -> None:
        if conn.state is ConnState.OWING:
            return  # the node-down would drop the calls whose replies we hold the Close for
        if not conn.peer_done and all(link.peer_closed for link in conn.links):
            # Everything the peer sent on this connection is in.
            conn.peer_done = True
            self._release_behind(conn)
            if not conn.replaced and not self._owner.stopped:
                reason = ErrNoConnection(f"disconnected from {conn.peer}")
                self._owner.node_down(conn.peer, reason)
        # Done once both Closes crossed on every link: the TLS shutdown and
        # the socket close that follow carry no frames, so do not wait for them.
        # Joins still under way are waited for: the peer may have taken them
        # in, and they are closed the same way when they arrive.
        if conn.joining == 0 and all(link.sent_close and link.peer_closed for link in conn.links):
            self._drain_finished(conn)

    def _drain_finished(self, conn: Connection) -> None:
        if conn.ended:
            return
        # Ended abruptly while holding its Close: out of the table of those.
        if conn.state is ConnState.OWING and self.owing.get(conn.peer) is conn:
            del self.owing[conn.peer]
        conn.state = ConnState.CLOSED
        if conn.timer is not None:
            conn.timer.cancel()
        # Out of the draining queue at once (a node that connects and
        # disconnects in a loop would otherwise walk every connection of the
        # last few seconds on each step), unless frames are still held on it.
        # Kept findable by id for a while: a join the peer dialled before it
        # saw our Close may still arrive, and is closed cleanly, not refused.
        if conn.held is None:
            self._unqueue(conn)
        self.drained[conn.handshake.connection_id] = conn
        self._ctx.lt.loop.call_later(self.drain_timeout, self._forget_drained, conn)
        conn.drained.set()
        self._release_behind(conn)
        log.info("%s: previous connection to %s closed cleanly", self._ctx.name, conn.peer)
        why = "handed over to a new connection" if conn.replaced else "closed"
        self._owner.connection_drained(conn.peer, why)

    async def await_drained(self, conn: Connection) -> None:
        """Until ``conn`` has closed (cleanly or not); bounded by its drain timer."""
        if conn.ended:
            return
        await wait_until(conn.drained.wait(), self.reply_wait + self.drain_timeout + 1.0)

    def _forget_drained(self, conn: Connection) -> None:
        self._unqueue(conn)
        if self.drained.get(conn.handshake.connection_id) is conn:
            del self.drained[conn.handshake.connection_id]

    def _unqueue(self, conn: Connection) -> None:
        queue = self.draining.get(conn.peer, [])
        if conn in queue:
            queue.remove(conn)
        if not queue:
            self.draining.pop(conn.peer, None)

    def _drain_expired(self, conn: Connection) -> None:
        conn.timer = None
        if not conn.ended:
            why = f"connection to {conn.peer} did not close within {self.drain_timeout} s"
            self._abandon(conn, ErrNoConnection(why))

    def _abandon(self, conn: Connection, reason: ErrNoConnection) -> None:
        """A draining connection ended abruptly: what the peer sent may be lost."""
        fire = not conn.peer_done
        conn.peer_done = True
        links, conn.links = conn.links, []
        for link in links:
            link.abort()
        self._drain_finished(conn)
        log.warning("%s: %s", self._ctx.name, reason)
        if fire and not self._owner.stopped:
            self._owner.node_down(conn.peer, reason)

    def _hold_behind_draining(self, conn: Connection) -> None:
        """Hold ``conn``'s frames until older connections to the same incarnation are in."""
        for old in self.draining.get(conn.peer, ()):
            if old.handshake.peer_creation == conn.handshake.peer_creation and not old.peer_done:
                conn.waiting.add(id(old))
        if conn.waiting and conn.held is None:
            conn.held = []
            self.holding += 1

    def _release_behind(self, old: Connection) -> None:
        candidates = [*self.draining.get(old.peer, ())]
        current = self.conns.get(old.peer)
        if current is not None:
            candidates.append(current)
        for conn in candidates:
            if id(old) in conn.waiting:
                conn.waiting.discard(id(old))
                if not conn.waiting:
                    self._unhold(conn, dispatch=True)

    def _unhold(self, conn: Connection, *, dispatch: bool) -> None:
        held, conn.held = conn.held, None
        conn.waiting.clear()
        if held is None:
            return
        self.holding -= 1
        if not dispatch:
            return
        for link, item in held:
            if isinstance(item, bool):
                self._peer_closed(conn, item)
            else:
                self._owner.dispatch_all(link, item)


def _allow_batches(link: LinkProtocol, conn: Connection) -> None:
    """Let the link's writer merge bursts of sends, within the peer's frame limit."""
    if link.writer is not None:
        peer = conn.handshake.peer_max_message_size
        link.writer.batch_limit = min(peer, fr.BATCH_MAX) if peer else fr.BATCH_MAX
