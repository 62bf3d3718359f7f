"""Trust epochs: what happens to connections whose authenticating material retired.

Every connection records, when it comes up, the material it was
authenticated under (:class:`TrustEpoch`): the version of our certificate it
presented, the CA pool that verified the peer and the CA in it the peer's
certificate chains to, and the peer certificate's expiry. Material retires
when our certificate is updated, when that CA leaves the pool, or when the
peer's certificate expires. The cert manager's policy
(``set_retired_policy``) says what follows:

* ``KEEP`` (default, Ergo's behaviour): nothing; it is logged once (info).
* ``DRAIN``: the connection is replaced with current material through the
  planned hand-over (``network.reconnect``: actors see no down or exit,
  nothing queued is lost, calls in flight complete). Replacements start at
  random moments in the first half of ``grace`` (an expired peer certificate:
  at once), so a CA change does not re-dial a whole cluster in one burst;
  a failed one is tried again; one still not replaced when ``grace`` is up is
  closed.
* ``CLOSE``: closed at once, gracefully (in-flight frames are delivered,
  then links and monitors fire).

One :class:`TrustKeeper` per node with a cert manager; it runs as one task on
the node's loop (owned by the loop thread, like every task there), wakes on
manager changes, policy changes, new connections and its own deadlines, and
owns the replacement tasks it starts (cancelled with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography import x509

from ergo_py.gen.cert import CertPool
from ergo_py.gen.certmanager import CertState, RetiredPolicy
from ergo_py.gen.errors import ErgoError, ErrIncorrect
from ergo_py.gen.validate import anchor_of
from ergo_py.node.context import NodeContext

if TYPE_CHECKING:
    from ergo_py.node.connections import Connection

log = logging.getLogger(__name__)

_RETRY = 1.0  # seconds between attempts to replace a retired connection (at most)


@dataclass(frozen=True, slots=True)
class TrustEpoch:
    """The material one connection was authenticated under.

    ``pool``: fingerprints of the CA pool that verified the peer (None: the
    peer was not verified against a pool of ours: system store, no client
    certificate asked, insecure dial). ``anchor``: the CA of that pool the
    peer's certificate chains to (None if not found, e.g. through
    intermediates the peer sent but we do not keep).
    """

    cert_version: int
    generation: int
    pool: frozenset[str] | None
    anchor: str | None
    peer_fingerprint: str | None
    peer_not_after: datetime | None


# Which CA of a pool a peer certificate chains to: a signature check (about
# 180 µs of CPU for ECDSA) that every connection's set-up paid on both sides,
# on the path of its first message. The answer depends only on the two
# inputs, and a peer presents the same certificate on every connection until
# it rotates: remembered (bounded; cleared when full, as gen/cert.py's parsed peers).
_anchors: dict[tuple[bytes, tuple[str, ...]], str | None] = {}
_ANCHORS_MAX = 1024


def _anchor(peer_der: bytes, pool_fps: tuple[str, ...], pool: CertPool) -> str | None:
    """The fingerprint of the CA in ``pool`` that ``peer_der`` chains to, or None."""
    key = (peer_der, pool_fps)
    try:
        return _anchors[key]
    except KeyError:
        pass
    try:
        leaf = x509.load_der_x509_certificate(peer_der)
    except ValueError:
        leaf = None
    ca = anchor_of(leaf, (), pool) if leaf is not None else None
    anchor = pool_fps[pool.certificates.index(ca)] if ca is not None else None
    if len(_anchors) >= _ANCHORS_MAX:
        _anchors.clear()
    _anchors[key] = anchor
    return anchor


def epoch_of(conn: Connection, insecure_dial: bool) -> TrustEpoch | None:
    """The epoch of ``conn`` from its first link's TLS details (None: plain TCP)."""
    tls = conn.links[0].tls if conn.links else None
    if tls is None or tls.local_state is None:
        return None
    state = tls.local_state
    pool = state.root_cas if conn.dialed else state.client_cas
    verified = not insecure_dial if conn.dialed else state.verify_mode != ssl.CERT_NONE
    anchor: str | None = None
    fps: frozenset[str] | None = None
    if pool is not None and verified and tls.peer_der is not None:
        pool_fps = pool.fingerprints
        fps = frozenset(pool_fps)
        anchor = _anchor(tls.peer_der, pool_fps, pool)
    peer = tls.peer
    return TrustEpoch(
        cert_version=state.version,
        generation=state.generation,
        pool=fps,
        anchor=anchor,
        peer_fingerprint=peer.fingerprint if peer is not None else None,
        peer_not_after=peer.not_after if peer is not None else None,
    )


def retired(epoch: TrustEpoch, state: CertState, dialed: bool, now: datetime) -> str | None:
    """Why ``epoch``'s material is retired under ``state`` at ``now``, or None."""
    if epoch.cert_version != state.version:
        return f"our certificate version {epoch.cert_version} was replaced (now {state.version})"
    pool = state.root_cas if dialed else state.client_cas
    if epoch.pool is not None and pool is not None:
        current = set(pool.fingerprints)
        if epoch.anchor is not None:
            if epoch.anchor not in current:
                return f"the CA that verified the peer ({epoch.anchor[:16]}) left the pool"
        elif epoch.pool - current:
            return "a CA of the pool that verified the peer left it"
    if epoch.peer_not_after is not None and epoch.peer_not_after <= now:
        return f"the peer's certificate expired at {epoch.peer_not_after.isoformat()}"
    return None


@dataclass
class _Plan:
    """A retired connection being replaced (DRAIN)."""

    conn: Connection
    why: str
    start: float  # loop time of the next attempt
    deadline: float  # loop time after which it is closed instead
    task: asyncio.Task[None] | None = None
    attempts: int = 0


class TrustKeeper:
    """Applies the cert manager's retired-material policy to one node's connections."""

    def __init__(
        self,
        ctx: NodeContext,
        *,
        connections: Callable[[], dict[str, Connection]],
        replace: Callable[[str], Awaitable[None]],
        close: Callable[[Connection, str], None],
        rand: random.Random | None = None,
    ) -> None:
        manager = ctx.cert_manager
        if manager is None:
            raise ErrIncorrect("a trust keeper needs the node's cert manager")
        self._cm = manager
        self._ctx = ctx
        self._connections = connections
        self._replace = replace
        self._close = close
        self._rand = rand or random.Random()
        self._wake: asyncio.Event | None = None
        self._plans: dict[int, _Plan] = {}  # id(conn) -> plan (the plan holds conn)
        self._kept: set[int] = set()  # id(conn) of retired connections logged under KEEP
        # (action, kind) -> count: action replaced/closed/kept, kind cert/ca/expiry
        self.counts: Counter[tuple[str, str]] = Counter()
        self._undo = [
            manager.expect_node_name(ctx.name),
            manager.add_listener(lambda _old, new, _err: self.poke() if new else None),
            manager.add_policy_listener(self.poke),
        ]

    # --- from other parts (any thread unless noted) --------------------------------------

    def poke(self) -> None:
        """Look at every connection again soon (a change of material or policy)."""
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(ErgoError):
                self._ctx.lt.call_soon(wake.set)

    def connection_up(self, conn: Connection) -> None:
        """Loop thread: record the epoch of a new current connection."""
        conn.epoch = epoch_of(conn, self._ctx.net.insecure_skip_verify)
        if self._wake is not None:
            self._wake.set()

    def close(self) -> None:
        """Stop following the manager (the task ends with the loop)."""
        undo, self._undo = self._undo, []
        for fn in undo:
            fn()

    # --- the task (loop thread) ----------------------------------------------------------

    async def run(self) -> None:
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                next_at = self.sweep(loop.time())
                timeout = None if next_at is None else max(0.0, next_at - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            tasks = [p.task for p in self._plans.values() if p.task is not None]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def sweep(self, now: float) -> float | None:
        """Act on every retired connection; the loop time of the next deadline (or None)."""
        policy, grace = self._cm.retired_policy()
        state = self._cm.state()
        wall = datetime.now(UTC)
        current = self._connections()
        live = {id(c) for c in current.values()}
        for key in [k for k in self._plans if k not in live]:
            gone = self._plans.pop(key)
            if gone.task is None:
                log.debug("%s: retired connection to %s is gone", self._ctx.name, gone.conn.peer)
        self._kept &= live
        next_at: float | None = None

        def soon(at: float) -> None:
            nonlocal next_at
            next_at = at if next_at is None else min(next_at, at)

        for conn in current.values():
            epoch = conn.epoch
            if not isinstance(epoch, TrustEpoch):
                continue
            why = retired(epoch, state, conn.dialed, wall)
            if why is None:
                if epoch.peer_not_after is not None:
                    soon(now + (epoch.peer_not_after - wall).total_seconds())
                self._plans.pop(id(conn), None)
                continue
            kind = _kind(why)
            if policy is RetiredPolicy.KEEP:
                if id(conn) not in self._kept:
                    self._kept.add(id(conn))
                    self.counts[("kept", kind)] += 1
                    log.info(  # the default, as in Ergo: not worth a warning
                        "%s: connection to %s keeps retired material (%s; policy KEEP)",
                        self._ctx.name,
                        conn.peer,
                        why,
                    )
                continue
            if policy is RetiredPolicy.CLOSE:
                self._end(conn, why, kind)
                continue
            plan = self._plans.get(id(conn))
            if plan is None:
                delay = 0.0 if kind == "expiry" else self._rand.uniform(0, grace / 2)
                plan = _Plan(conn, why, now + delay, now + grace)
                self._plans[id(conn)] = plan
                log.info(
                    "%s: connection to %s is retired (%s); replacing it in %.1f s",
                    self._ctx.name,
                    conn.peer,
                    why,
                    delay,
                )
            if plan.task is not None:
                continue
            if now >= plan.deadline and plan.attempts > 0:
                self._plans.pop(id(conn), None)
                self._end(conn, f"{why}; not replaced within {grace:.1f} s", kind)
                continue
            if now >= plan.start:
                plan.attempts += 1
                plan.task = self._ctx.lt.spawn(self._replace_one(plan, kind))
            else:
                soon(plan.start)
        return next_at

    def _end(self, conn: Connection, why: str, kind: str) -> None:
        self.counts[("closed", kind)] += 1
        log.warning("%s: closing the connection to %s: %s", self._ctx.name, conn.peer, why)
        self._close(conn, f"retired material: {why}")

    async def _replace_one(self, plan: _Plan, kind: str) -> None:
        conn = plan.conn
        loop = asyncio.get_running_loop()
        try:
            if self._connections().get(conn.peer) is conn:
                await self._replace(conn.peer)
            self.counts[("replaced", kind)] += 1
            log.info("%s: retired connection to %s replaced", self._ctx.name, conn.peer)
        except ErgoError as exc:
            left = plan.deadline - loop.time()
            plan.start = loop.time() + max(0.0, min(_RETRY, left))
            log.warning(
                "%s: could not replace the retired connection to %s (%s); %s",
                self._ctx.name,
                conn.peer,
                exc,
                f"trying again, closing it in {left:.1f} s" if left > 0 else "closing it",
            )
        finally:
            plan.task = None
            if self._wake is not None:
                self._wake.set()


def _kind(why: str) -> str:
    if why.startswith("our certificate"):
        return "cert"
    if "expired" in why:
        return "expiry"
    return "ca"
