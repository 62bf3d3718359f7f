"""Three nodes on mTLS under constant load while certificates, the CA and client auth change.

The product's promise, end to end: every node's certificate is rotated several
times, the CA is replaced through the overlap procedure and client auth is
tightened, each change followed by moving live connections onto it, while
actors on every node keep calling and messaging actors on the others. Nothing
may be lost, duplicated or reordered, and no actor may restart.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import WAIT, wait_threads_gone

from ergo_py import act, gen
from ergo_py.testing import Cluster

NAMES = ["n1@127.0.0.1", "n2@127.0.0.1", "n3@127.0.0.1"]


class Ledger:
    """What every actor saw, shared by the actors of all three nodes (one process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
        self.sends: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
        self.inits: collections.Counter[str] = collections.Counter()
        self.terminated: list[tuple[str, Any]] = []
        self.errors: list[str] = []
        self.made: collections.Counter[tuple[str, str]] = collections.Counter()
        self.stop = threading.Event()
        self.finished: queue.Queue[str] = queue.Queue()


class Counter(act.Actor):
    """Registered as "counter" on every node: records each call and message by sender node."""

    def init(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.me = str(self.node.name)
        with ledger.lock:
            ledger.inits[f"counter {self.me}"] += 1

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        _, src, n = request
        with self.ledger.lock:
            self.ledger.calls[(src, self.me)].append(n)
        return n

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        _, src, n = message
        with self.ledger.lock:
            self.ledger.sends[(src, self.me)].append(n)

    def terminate(self, reason: Any) -> None:
        with self.ledger.lock:
            self.ledger.terminated.append((f"counter {self.me}", reason))


class Caller(act.Actor):
    """Sends then calls every other node's counter, over and over, until told to stop."""

    def init(self, ledger: Ledger, peers: list[str]) -> None:
        self.ledger = ledger
        self.me = str(self.node.name)
        self.peers = peers
        self.seq = dict.fromkeys(peers, 0)
        with ledger.lock:
            ledger.inits[f"caller {self.me}"] += 1
        self.send(self.pid, "tick")

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        if self.ledger.stop.is_set():
            self.ledger.finished.put(self.me)
            return
        for peer in self.peers:
            n = self.seq[peer]
            target = gen.ProcessID("counter", peer)
            try:
                self.send(target, ("send", self.me, n))
                reply = self.call(target, ("call", self.me, n), timeout=10)
                if reply != n:
                    raise AssertionError(f"reply {reply!r} to call {n}")
            except (gen.ErgoError, AssertionError) as exc:
                with self.ledger.lock:
                    self.ledger.errors.append(f"{self.me} -> {peer} #{n}: {exc!r}")
            self.seq[peer] = n + 1
            with self.ledger.lock:
                self.ledger.made[(self.me, peer)] = n + 1
        self.send(self.pid, "tick")

    def terminate(self, reason: Any) -> None:
        with self.ledger.lock:
            self.ledger.terminated.append((f"caller {self.me}", reason))


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=NAMES, cookie="rotation") as c:
        yield c
    assert wait_threads_gone(before) == []


def _wait_progress(ledger: Ledger, at_least: int) -> None:
    """Every caller made ``at_least`` more round trips to every peer (bounded wait)."""
    with ledger.lock:
        start = dict(ledger.made)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with ledger.lock:
            if all(ledger.made[k] - start.get(k, 0) >= at_least for k in _pairs()):
                return
        time.sleep(0.02)
    raise AssertionError(f"callers stalled: {dict(ledger.made)} errors: {ledger.errors[:5]}")


def _pairs() -> list[tuple[str, str]]:
    return [(a, b) for a in NAMES for b in NAMES if a != b]


def test_rotating_everything_under_load_loses_nothing(cluster: Cluster) -> None:
    ledger = Ledger()
    for name in NAMES:
        # Start lenient so that tightening it is part of the run.
        cluster.managers[name].set_client_auth(gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN)
        cluster[name].spawn_register("counter", Counter, ledger)
    for name in NAMES:
        cluster[name].spawn(Caller, ledger, [p for p in NAMES if p != name])
    _wait_progress(ledger, 20)
    n1, n2, n3 = NAMES

    # A rotation reaches a connection only when it is renewed: renew n1 -> n2
    # but not n1 -> n3, and the two show different certificates side by side.
    old_fp = cluster[n1].network().info(n3)["local_cert_fingerprint"]
    new_cert = cluster.rotate(n1)
    cluster.reconnect(n1, n2)
    _wait_progress(ledger, 5)
    assert cluster[n1].network().info(n2)["local_cert_fingerprint"] == new_cert.fingerprint
    assert cluster[n2].network().info(n1)["peer_cert_fingerprint"] == new_cert.fingerprint
    assert cluster[n1].network().info(n3)["local_cert_fingerprint"] == old_fp
    assert cluster[n3].network().info(n1)["peer_cert_fingerprint"] == old_fp

    for _ in range(3):
        for name in NAMES:
            cluster.rotate(name, reconnect=True)
            _wait_progress(ledger, 5)

    def settle(step: str) -> None:
        for name in NAMES:
            cluster.reconnect_all(name)
        _wait_progress(ledger, 5)

    cluster.rotate_ca(settle)

    for name in NAMES:
        cluster.managers[name].set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    settle("client certificates required")

    ledger.stop.set()
    finished = {ledger.finished.get(timeout=4 * WAIT) for _ in NAMES}
    assert finished == set(NAMES)

    assert ledger.errors == []
    with ledger.lock:
        for pair in _pairs():
            made = ledger.made[pair]
            assert made > 0
            # Each round trip's reply proves its call arrived, and the send
            # before it (same sender, same order): exactly once, in order.
            assert ledger.calls[pair] == list(range(made)), pair
            assert ledger.sends[pair] == list(range(made)), pair
        assert ledger.terminated == []
        assert set(ledger.inits.values()) == {1} and len(ledger.inits) == 6

    # Every connection ends on every node's latest certificate, from the new CA.
    for name in NAMES:
        current = cluster.managers[name].state().certificate.fingerprint
        for peer in NAMES:
            if peer == name:
                continue
            assert cluster[name].network().info(peer)["local_cert_fingerprint"] == current
            assert cluster[peer].network().info(name)["peer_cert_fingerprint"] == current
            assert cluster[name].network().info(peer)["identity_verified"] is True
