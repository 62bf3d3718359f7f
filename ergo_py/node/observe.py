"""What a node tells about itself: events to subscribers, counters for metrics, health.

One :class:`Observer` per node, made by the core before the network backend
(which reaches it as ``router.observer``). Everything here is cheap for the
code that reports: an event is built only when someone subscribed to its
type, and delivery is a non-blocking mailbox put (a subscriber that is gone
is dropped). Counters are plain ints updated on the loop thread (handshakes,
closed links' totals) or on the changing thread (certificate updates);
``node/metrics.py`` reads them on scrape, with the links' own counters.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ergo_py.gen.certmanager import CertManager, CertState
from ergo_py.gen.errors import CertificateError
from ergo_py.gen.events import (
    Event,
    EventCertExpiring,
    EventCertRejected,
    EventCertUpdated,
    EventConnectionDown,
    EventConnectionDrained,
    EventConnectionUp,
    EventTrustChanged,
    Health,
)
from ergo_py.gen.identifiers import PID
from ergo_py.gen.options import NetworkMode, NodeOptions

if TYPE_CHECKING:
    from ergo_py.net.link import LinkProtocol
    from ergo_py.node.connections import Connection

log = logging.getLogger(__name__)

# Handshake durations (seconds): the histogram's upper bounds.
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# An expiring certificate is announced at the margin, then again at these.
REANNOUNCE = (timedelta(days=1), timedelta(hours=1))

Deliver = Callable[[PID, Any], bool]


def _trust(state: CertState) -> set[str]:
    fps: set[str] = set()
    for pool in (state.client_cas, state.root_cas):
        if pool is not None:
            fps.update(pool.fingerprints)
    return fps


class Observer:
    """A node's events, counters and health (see the module docstring)."""

    def __init__(self, name: str, deliver: Deliver, options: NodeOptions) -> None:
        self.name = name
        self._deliver = deliver
        self.cert_manager: CertManager | None = options.cert_manager
        self.margin: timedelta = options.cert_expiry_margin
        # The expiry check runs on the network's loop thread: none without a network.
        self.check_interval = (
            options.cert_check_interval if options.network.mode != NetworkMode.DISABLED else 0.0
        )
        self._lock = threading.Lock()
        # pid -> the event types it wants (empty: all); replaced, never mutated
        self._subs: dict[PID, frozenset[type]] = {}
        self.cert_updates: Counter[str] = Counter()
        # Refused changes by the check that refused them (gen.validate.CHECKS, "load").
        self.cert_rejections: Counter[str] = Counter()
        self.handshakes: Counter[tuple[str, str, str]] = Counter()
        self.handshake_buckets = [0] * (len(HANDSHAKE_BUCKETS) + 1)
        self.handshake_sum = 0.0
        self.handshake_count = 0
        # Totals of links that are gone (live ones are read on scrape).
        self.closed_messages = {"in": 0, "out": 0}
        self.closed_bytes = {"in": 0, "out": 0}
        self._announced: dict[str, int] = {}  # fingerprint -> levels announced
        self.network: Any = None  # the TCP backend, once it is made (None: no network)
        self.trust: Any = None  # node/trust.py's TrustKeeper (None: no cert manager)
        # The last node events, kept once someone asked (the observer page).
        self.recent: deque[Event] | None = None
        self._remove_listener: Callable[[], None] | None = None
        if self.cert_manager is not None:
            self._remove_listener = self.cert_manager.add_listener(self._cert_changed)

    # --- subscribers --------------------------------------------------------------------

    def subscribe(self, pid: PID, types: tuple[type, ...]) -> None:
        for t in types:
            if not (isinstance(t, type) and issubclass(t, Event)):
                from ergo_py.gen.errors import ErrIncorrect

                raise ErrIncorrect(f"{t!r} is not a node event type")
        with self._lock:
            subs = dict(self._subs)
            subs[pid] = frozenset(types)
            self._subs = subs

    def unsubscribe(self, pid: PID) -> None:
        with self._lock:
            if pid in self._subs:
                subs = dict(self._subs)
                del subs[pid]
                self._subs = subs

    def keep_recent(self, n: int) -> None:
        """Keep the last ``n`` events of every type in :attr:`recent` from now on."""
        self.recent = deque(self.recent or (), maxlen=max(n, 1))

    def wants(self, kind: type) -> bool:
        """Whether anyone subscribed to ``kind``: build the event only then."""
        if self.recent is not None:
            return True
        return any(not types or kind in types for types in self._subs.values())

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to its subscribers (non-blocking; the gone are dropped)."""
        if self.recent is not None:
            self.recent.append(event)  # deque.append is atomic: any thread
        kind = type(event)
        gone = [
            pid
            for pid, types in self._subs.items()
            if (not types or kind in types) and not self._deliver(pid, event)
        ]
        for pid in gone:
            self.unsubscribe(pid)

    # --- certificates (any thread that changes the manager) ------------------------------

    def _cert_changed(
        self, old: CertState, new: CertState | None, error: CertificateError | None
    ) -> None:
        if new is None:
            self.cert_updates["rejected"] += 1
            self.cert_rejections[getattr(error, "check", "load")] += 1
            if self.wants(EventCertRejected):
                self.emit(EventCertRejected(str(error)))
            return
        if new.version != old.version:
            self.cert_updates["ok"] += 1
            cert = new.certificate
            if self.wants(EventCertUpdated):
                self.emit(EventCertUpdated(new.version, cert.fingerprint, cert.not_after))
        before, after = _trust(old), _trust(new)
        if before != after and self.wants(EventTrustChanged):
            self.emit(
                EventTrustChanged(tuple(sorted(after - before)), tuple(sorted(before - after)))
            )

    # --- connections (loop thread) -----------------------------------------------------

    def handshake_done(self, side: str, result: str, reason: str, seconds: float | None) -> None:
        self.handshakes[(side, result, reason)] += 1
        if seconds is not None:
            self.handshake_buckets[bisect.bisect_left(HANDSHAKE_BUCKETS, seconds)] += 1
            self.handshake_sum += seconds
            self.handshake_count += 1

    def link_gone(self, link: LinkProtocol) -> None:
        self.closed_messages["in"] += link.messages_in
        self.closed_messages["out"] += link.messages_out
        self.closed_bytes["in"] += link.bytes_in
        self.closed_bytes["out"] += link.writer.bytes_out if link.writer is not None else 0

    def connection_up(self, conn: Connection, replacing: bool) -> None:
        if not self.wants(EventConnectionUp):
            return
        self.emit(EventConnectionUp(conn.peer, connection_info(conn, replacing)))

    def connection_down(self, peer: str, reason: BaseException | str) -> None:
        if self.wants(EventConnectionDown):
            self.emit(EventConnectionDown(peer, str(reason)))

    def connection_drained(self, peer: str, reason: str) -> None:
        if self.wants(EventConnectionDrained):
            self.emit(EventConnectionDrained(peer, reason))

    # --- expiry ------------------------------------------------------------------------

    def certificates(self) -> list[tuple[str, str, datetime]]:
        """(node, fingerprint, not_after): our own certificate, then each peer's."""
        out: list[tuple[str, str, datetime]] = []
        if self.cert_manager is not None:
            cert = self.cert_manager.get_certificate()
            out.append((self.name, cert.fingerprint, cert.not_after))
        net = self.network
        if net is not None:
            for peer, conn in list(net.current_connections().items()):
                tls = conn.links[0].tls if conn.links else None
                if tls is not None and tls.peer is not None:
                    out.append((peer, tls.peer.fingerprint, tls.peer.not_after))
        return out

    def check_expiry(self, now: datetime | None = None) -> list[EventCertExpiring]:
        """Announce certificates within the margin, again at 1 day and 1 hour."""
        now = now or datetime.now(UTC)
        thresholds = (self.margin, *(t for t in REANNOUNCE if t < self.margin))
        made: list[EventCertExpiring] = []
        for node, fp, not_after in self.certificates():
            left = not_after - now
            level = sum(1 for t in thresholds if left <= t)
            if level > self._announced.get(fp, 0):
                self._announced[fp] = level
                made.append(EventCertExpiring(node, fp, not_after))
        for event in made:
            log.warning(
                "%s: certificate of %s (%.16s) expires at %s",
                self.name,
                event.node,
                event.fingerprint,
                event.not_after.isoformat(),
            )
            self.emit(event)
        return made

    async def expiry_loop(self) -> None:
        """The periodic check (a task the node's loop owns)."""
        while True:
            try:
                self.check_expiry()
            except Exception:
                log.exception("%s: certificate expiry check failed", self.name)
            await asyncio.sleep(self.check_interval)

    # --- health ------------------------------------------------------------------------

    def health(self, alive: bool, needs_acceptor: bool) -> Health:
        reasons: list[str] = []
        if not alive:
            reasons.append("node is stopping")
        if needs_acceptor:
            net = self.network
            if net is None or not net.acceptors():
                reasons.append("no acceptor is listening")
        if self.cert_manager is not None:
            cert = self.cert_manager.get_certificate()
            left = cert.not_after - datetime.now(UTC)
            if left <= self.margin:
                reasons.append(
                    f"own certificate {cert.fingerprint[:16]} expires within the margin "
                    f"({self.margin}): at {cert.not_after.isoformat()}"
                )
        return Health(ready=not reasons, reasons=reasons)

    def close(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        with self._lock:
            self._subs = {}


def connection_info(conn: Connection, replacing: bool = False) -> dict[str, Any]:
    """What an ``EventConnectionUp`` tells about a connection."""
    link = conn.links[0] if conn.links else None
    tls = link.tls if link is not None else None
    return {
        "dialed": conn.dialed,
        "handover": replacing,
        "links": len(conn.links),
        "connection_id": conn.handshake.connection_id,
        "peer_creation": conn.handshake.peer_creation,
        "tls": tls.version if tls is not None else None,
        "cert_version": tls.local_state.version if tls and tls.local_state else None,
        "peer_fingerprint": tls.peer.fingerprint if tls and tls.peer else None,
        "peer_not_after": tls.peer.not_after if tls and tls.peer else None,
    }
