"""Continuous sequenced traffic between cluster nodes, with an exact account of every message.

Spawn a :class:`Receiver` registered as :data:`RECEIVER` on every node, then
a :class:`Traffic` actor per node. Each Traffic actor, one operation per
tick, picks a random peer and either calls its receiver (``("call", me,
n)``, answered with the same tuple) or sends it a sequenced message
(``("seq", me, epoch, n)``). Every ``check_every`` sends to a peer it asks
that receiver how many of the sends since the last check arrived: the
check is a call from the same process, so it travels behind those sends
(messages between two processes keep their order) and the answer is
final. Hence each message ends up in exactly one bucket:

- ``delivered``: a call answered correctly, or a send confirmed by a check;
- ``failed``: the sender was told: a call or send raised, or the check
  covering a send raised (the receiver's node could not be reached);
- ``crashed``: sends the receiver's previous incarnation took with it (its
  node was killed; the check after its restart says so: another token);
- ``lost``: neither: confirmed missing by a live receiver, or a wrong
  answer. Must be 0: that is the claim the scenario checks.

``Traffic`` answers the call ``"finish"`` with its figures (a dict) after
checking every peer once more, and stops ticking; a receiver's figures
(``"stats"``) count sends that arrived out of order.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import random
import time
import uuid
from typing import Any

from ergo_py.act.actor import Actor
from ergo_py.gen.errors import ErgoError
from ergo_py.gen.identifiers import PID, ProcessID, Ref

__all__ = ["RECEIVER", "Receiver", "Traffic", "total"]

RECEIVER = "ergo_traffic_rx"
_TICK = "ergo_traffic_tick"


class Receiver(Actor):
    """Records the sequenced sends it gets and answers calls and checks (see the module)."""

    def init(self, *args: Any) -> None:
        self._token = uuid.uuid4().hex  # this incarnation
        self._got: dict[tuple[str, int], list[int]] = {}
        self._reordered = 0

    def handle_message(self, sender: PID, message: Any) -> None:
        if isinstance(message, (tuple, list)) and len(message) == 4 and message[0] == "seq":
            _, source, epoch, n = message
            got = self._got.setdefault((source, epoch), [])
            if got and n <= got[-1]:
                self._reordered += 1
                bisect.insort(got, n)
            else:
                got.append(n)

    def handle_call(self, sender: PID, ref: Ref, request: Any) -> Any:
        kind = request[0] if isinstance(request, (tuple, list)) and request else request
        if kind == "call":
            return request
        if kind == "check":  # how many of (lo, hi] arrived
            _, source, epoch, lo, hi = request
            got = self._got.get((source, epoch), [])
            return self._token, bisect.bisect_right(got, hi) - bisect.bisect_right(got, lo)
        if kind == "stats":
            return {"reordered": self._reordered}
        raise ValueError(f"unknown request {request!r}")


@dataclasses.dataclass
class _Peer:
    target: ProcessID
    epoch: int = 0
    seq: int = 0  # last sent in this epoch
    lo: int = 0  # sends up to here are accounted for
    token: str | None = None  # the receiver incarnation seen at the last check


class Traffic(Actor):
    """Sends and calls to random peers until ``"finish"`` (see the module docstring).

    ``init(peers, interval=0.02, check_every=10, call_share=0.5, timeout=5.0, seed=None)``.
    """

    def init(self, *args: Any) -> None:
        peers, *rest = args
        self._interval = float(rest[0]) if len(rest) > 0 else 0.02
        self._check_every = int(rest[1]) if len(rest) > 1 else 10
        self._call_share = float(rest[2]) if len(rest) > 2 else 0.5
        self._timeout = float(rest[3]) if len(rest) > 3 else 5.0
        self._rng = random.Random(rest[4] if len(rest) > 4 else None)
        node = str(self.pid.node)
        self._me = f"{node}/{uuid.uuid4().hex[:12]}"  # this actor: a restarted node's is another
        self._peers = {p: _Peer(ProcessID(RECEIVER, p)) for p in peers if p != node}
        self._names = sorted(self._peers)
        self._running = bool(self._names)
        self.figures: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.samples: list[tuple[float, float]] = []  # (wall clock at the answer, latency)
        if self._running:
            self.send(self.pid, _TICK)

    def handle_message(self, sender: PID, message: Any) -> None:
        if message == _TICK and self._running:
            self._one()
            time.sleep(self._interval)
            self.send(self.pid, _TICK)

    def handle_call(self, sender: PID, ref: Ref, request: Any) -> Any:
        if request == "finish":
            self._running = False
            for name in self._names:
                self._check(name)
            return {
                "node": str(self.pid.node),
                "figures": dict(self.figures),
                "errors": dict(self.errors),
                "samples": list(self.samples),
            }
        raise ValueError(f"unknown request {request!r}")

    def _failed(self, exc: ErgoError, n: int = 1) -> None:
        self.figures["failed"] += n
        self.errors[type(exc).__name__] += n

    def _one(self) -> None:
        name = self._rng.choice(self._names)
        peer = self._peers[name]
        if self._rng.random() < self._call_share:
            self._call(peer)
        else:
            self._send(name, peer)

    def _call(self, peer: _Peer) -> None:
        self.figures["calls"] += 1
        self.figures["sent"] += 1
        n = self.figures["calls"]
        start = time.monotonic()
        try:
            reply = self.call(peer.target, ("call", self._me, n), self._timeout)
        except ErgoError as exc:
            self._failed(exc)
            return
        self.samples.append((time.time(), time.monotonic() - start))
        if tuple(reply) == ("call", self._me, n):
            self.figures["delivered"] += 1
        else:
            self.figures["lost"] += 1
            self.figures["wrong_replies"] += 1

    def _send(self, name: str, peer: _Peer) -> None:
        self.figures["sent"] += 1
        if peer.token is None:  # learn the receiver's incarnation first
            error = self._check(name)
            if error is not None:
                self._failed(error)
                return
        try:
            self.send(peer.target, ("seq", self._me, peer.epoch, peer.seq + 1))
        except ErgoError as exc:
            self._failed(exc)
            return
        peer.seq += 1
        self.figures["sends"] += 1
        if peer.seq - peer.lo >= self._check_every:
            self._check(name)

    def _check(self, name: str) -> ErgoError | None:
        """Account for the sends to ``name`` since the last check; the error if it could not."""
        peer = self._peers[name]
        open_ = peer.seq - peer.lo
        try:
            token, arrived = self.call(
                peer.target, ("check", self._me, peer.epoch, peer.lo, peer.seq), self._timeout
            )
        except ErgoError as exc:
            if open_:
                self._failed(exc, open_)
            peer.epoch += 1  # what the receiver got of those no longer counts
            peer.seq = peer.lo = 0
            return exc
        self.figures["delivered"] += arrived
        if peer.token is not None and token != peer.token:
            self.figures["crashed"] += open_ - arrived
        else:
            self.figures["lost"] += open_ - arrived
        peer.token = token
        peer.lo = peer.seq
        return None


def total(results: list[dict[str, Any]]) -> collections.Counter[str]:
    """The sum of several ``"finish"`` answers' figures."""
    sums: collections.Counter[str] = collections.Counter()
    for result in results:
        sums.update(result["figures"])
    return sums
