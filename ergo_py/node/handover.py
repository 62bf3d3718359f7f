"""Graceful close and gap-free hand-over of node connections (loop thread only).

Closing is a half-close per link, as TCP's FIN: a side that stops using a
connection puts a ``Close`` frame behind every frame it accepted on each
link and keeps reading until the peer's ``Close``; the link is done once
both crossed, so nothing either side sent is lost. A hand-over
(``reconnect``) installs the new connection first, drains the old one this
way, and holds frames arriving on the new one until the old one's last frame
is in, so no sender's stream is reordered by the switch. A connection closed
for good holds its Close until the replies to calls the peer made on it have
gone out (bounded), so a call in flight during ``disconnect`` gets its answer. ``Handover`` is the
part of the TCP backend that does this; it works on the backend's tables.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from ergo_py.gen.errors import ErrNoConnection
from ergo_py.gen.node import NodeRouter
from ergo_py.gen.options import NetworkOptions
from ergo_py.net import frames as fr
from ergo_py.net.link import LinkProtocol
from ergo_py.net.loop import LoopThread
from ergo_py.node.connection import Connection

log = logging.getLogger(__name__)


class Handover:
    """Mixin of the TCP backend: draining connections and switching to new ones."""

    _name: str
    _net: NetworkOptions
    _lt: LoopThread
    _router: NodeRouter
    _stopped: bool
    _conns: dict[str, Connection]
    _draining: dict[str, list[Connection]]
    _drained: dict[str, Connection]
    _owing: dict[str, Connection]
    _holding: int

    @abc.abstractmethod
    def _dispatch_all(self, link: LinkProtocol, frames: list[fr.Frame]) -> None:
        """Deliver frames that were held back (the backend's inbound path)."""

    def _start_drain(self, conn: Connection, *, replaced: bool, why: str) -> None:
        """Stop sending on ``conn`` (Close on every link); keep reading until the peer's.

        Nothing either side had accepted is lost. ``replaced``: a newer
        connection carries on, so links, monitors and pending calls stay;
        otherwise the node-down follows once the peer's last frame is in.
        """
        if conn.draining or conn.closed:
            return
        conn.draining = True
        conn.replaced = replaced
        if self._conns.get(conn.peer) is conn:
            del self._conns[conn.peer]
        self._draining.setdefault(conn.peer, []).append(conn)
        log.info("%s: closing connection to %s: %s", self._name, conn.peer, why)
        if conn.timer is not None:  # waiting for the peer's replacement: it came
            conn.timer.cancel()
            conn.timer = None
        if not replaced and self._owes_replies(conn.peer):
            # Calls the peer made are still running here: their replies go
            # out on this connection before our Close (a hand-over needs no
            # wait: replies take the new connection). Bounded, so that the
            # peer's own drain timer does not run out first.
            conn.owing = True
            self._owing[conn.peer] = conn
            conn.timer = self._lt.loop.call_later(self._reply_wait, self._close_links, conn)
            return
        self._close_links(conn)

    def _close_links(self, conn: Connection) -> None:
        """Put a Close on every link of ``conn`` and wait (bounded) for the peer's."""
        if conn.owing:
            conn.owing = False
            if self._owing.get(conn.peer) is conn:
                del self._owing[conn.peer]
            if self._owes_replies(conn.peer):
                log.warning(
                    "%s: closing the connection to %s with calls of its still running here "
                    "after %.1f s; their callers get gen.ErrNoConnection",
                    self._name,
                    conn.peer,
                    self._reply_wait,
                )
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = self._lt.loop.call_later(self._drain_timeout, self._drain_expired, conn)
        for link in list(conn.links):
            link.send_close(conn.replaced)
        self._drain_progress(conn)

    def _replies_written(self, peer: str) -> None:
        """Loop thread: the last reply owed to ``peer`` went out; send the held Close."""
        conn = self._owing.get(peer)
        if conn is not None and not self._owes_replies(peer):
            self._close_links(conn)

    @abc.abstractmethod
    def _owes_replies(self, peer: str) -> bool:
        """Whether calls from ``peer`` are still waiting for their reply here."""

    @abc.abstractmethod
    def _node_down(self, peer: str, reason: ErrNoConnection) -> None:
        """The connection to ``peer`` is gone for good: links, monitors and calls learn it."""

    @property
    def _drain_timeout(self) -> float:
        return self._net.handshake_timeout

    @property
    def _reply_wait(self) -> float:
        """How long a Close waits for replies owed to the peer (half its drain timer)."""
        return self._drain_timeout / 2

    def _peer_closed(self, conn: Connection, replaced: bool) -> None:
        """A Close from the peer on one of ``conn``'s links (frames before it are in)."""
        if conn.closed:
            return
        if conn.draining:
            self._drain_progress(conn)
            return
        if not replaced:
            self._start_drain(conn, replaced=False, why=f"{conn.peer} closed it")
            return
        # The peer is handing over to a connection we have not seen come up
        # yet; it still reads this one, so keep sending here until it does.
        if conn.timer is None:
            conn.timer = self._lt.loop.call_later(
                self._net.connect_timeout + self._net.handshake_timeout,
                self._replacement_missing,
                conn,
            )

    def _replacement_missing(self, conn: Connection) -> None:
        conn.timer = None
        if not conn.draining and not conn.closed:
            why = "the peer's replacement connection did not arrive"
            self._start_drain(conn, replaced=False, why=why)

    def _drain_progress(self, conn: Connection) -> None:
        if conn.owing:
            return  # the node-down would drop the calls whose replies we hold the Close for
        if not conn.peer_done and all(link.peer_closed for link in conn.links):
            # Everything the peer sent on this connection is in.
            conn.peer_done = True
            self._release_behind(conn)
            if not conn.replaced and not self._stopped:
                reason = ErrNoConnection(f"disconnected from {conn.peer}")
                self._node_down(conn.peer, reason)
        # Done once both Closes crossed on every link: the TLS shutdown and
        # the socket close that follow carry no frames, so do not wait for them.
        # Joins still under way are waited for: the peer may have taken them
        # in, and they are closed the same way when they arrive.
        if conn.joining == 0 and all(link.sent_close and link.peer_closed for link in conn.links):
            self._drain_finished(conn)

    def _drain_finished(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.owing:  # ended abruptly while holding its Close
            conn.owing = False
            if self._owing.get(conn.peer) is conn:
                del self._owing[conn.peer]
        if conn.timer is not None:
            conn.timer.cancel()
        # Out of the draining queue at once (a node that connects and
        # disconnects in a loop would otherwise walk every connection of the
        # last few seconds on each step), unless frames are still held on it.
        # Kept findable by id for a while: a join the peer dialled before it
        # saw our Close may still arrive, and is closed cleanly, not refused.
        if conn.held is None:
            self._unqueue(conn)
        self._drained[conn.done.connection_id] = conn
        self._lt.loop.call_later(self._drain_timeout, self._forget_drained, conn)
        conn.drained.set()
        self._release_behind(conn)
        log.info("%s: previous connection to %s closed cleanly", self._name, conn.peer)

    async def _await_drained(self, conn: Connection) -> None:
        """Until ``conn`` has closed (cleanly or not); bounded by its drain timer."""
        if conn.closed:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            budget = self._reply_wait + self._drain_timeout + 1.0
            await asyncio.wait_for(conn.drained.wait(), budget)

    def _forget_drained(self, conn: Connection) -> None:
        self._unqueue(conn)
        if self._drained.get(conn.done.connection_id) is conn:
            del self._drained[conn.done.connection_id]

    def _unqueue(self, conn: Connection) -> None:
        queue = self._draining.get(conn.peer, [])
        if conn in queue:
            queue.remove(conn)
        if not queue:
            self._draining.pop(conn.peer, None)

    def _drain_expired(self, conn: Connection) -> None:
        conn.timer = None
        if not conn.closed:
            why = f"connection to {conn.peer} did not close within {self._drain_timeout} s"
            self._abandon(conn, ErrNoConnection(why))

    def _abandon(self, conn: Connection, reason: ErrNoConnection) -> None:
        """A draining connection ended abruptly: what the peer sent may be lost."""
        fire = not conn.peer_done
        conn.peer_done = True
        links, conn.links = conn.links, []
        for link in links:
            link.abort()
        self._drain_finished(conn)
        log.warning("%s: %s", self._name, reason)
        if fire and not self._stopped:
            self._node_down(conn.peer, reason)

    def _hold_behind_draining(self, conn: Connection) -> None:
        """Hold ``conn``'s frames until older connections to the same incarnation are in."""
        for old in self._draining.get(conn.peer, ()):
            if old.done.peer_creation == conn.done.peer_creation and not old.peer_done:
                conn.waiting.add(id(old))
        if conn.waiting and conn.held is None:
            conn.held = []
            self._holding += 1

    def _release_behind(self, old: Connection) -> None:
        candidates = [*self._draining.get(old.peer, ())]
        current = self._conns.get(old.peer)
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
        self._holding -= 1
        if not dispatch:
            return
        for link, item in held:
            if isinstance(item, bool):
                self._peer_closed(conn, item)
            else:
                self._dispatch_all(link, item)
