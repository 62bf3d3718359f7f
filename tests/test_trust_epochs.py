"""Trust epochs: connections on retired material are kept, drained or closed, by policy."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import eventually, get, wait_threads_gone
from cryptography.hazmat.primitives import serialization

from ergo_py import gen
from ergo_py.gen.certmanager import CertState
from ergo_py.lib import CertificateAuthority
from ergo_py.node import trust
from ergo_py.node.trust import TrustEpoch, retired
from ergo_py.testing import Cluster, Echo, Sink, Watcher

A = "a@127.0.0.1"
B = "b@127.0.0.1"
C = "c@127.0.0.1"
HOSTS = ("127.0.0.1",)


def conn_id(node: gen.Node, peer: str) -> str | None:
    try:
        return str(node.network().info(peer)["connection_id"])
    except gen.ErrNoConnection:
        return None


# -- the verdict, without a network


def test_retired_names_each_kind_of_retired_material() -> None:
    ca, other = CertificateAuthority.create("one"), CertificateAuthority.create("two")
    pool = gen.CertPool([ca.certificate, other.certificate])
    cert = ca.issue("a@localhost")
    state = CertState(generation=3, version=2, certificate=cert, client_cas=pool, root_cas=pool)
    now = datetime.now(UTC)
    epoch = TrustEpoch(
        cert_version=2,
        generation=3,
        pool=frozenset(pool.fingerprints),
        anchor=ca.pool().fingerprints[0],
        peer_fingerprint="f" * 64,
        peer_not_after=now + timedelta(hours=1),
    )
    assert retired(epoch, state, dialed=True, now=now) is None
    newer = CertState(generation=4, version=3, certificate=cert, client_cas=pool, root_cas=pool)
    assert "our certificate" in str(retired(epoch, newer, dialed=True, now=now))
    narrowed = CertState(3, 2, cert, client_cas=pool, root_cas=other.pool())
    assert "left the pool" in str(retired(epoch, narrowed, dialed=True, now=now))
    # The accepted side is judged by the client-CA pool, which still holds it.
    assert retired(epoch, narrowed, dialed=False, now=now) is None
    later = now + timedelta(hours=2)
    assert "expired" in str(retired(epoch, state, dialed=True, now=later))


def test_a_remembered_anchor_follows_the_pool_it_was_found_in() -> None:
    # Set-ups remember which CA a peer certificate chains to; the same
    # certificate under another pool is checked against that pool.
    ca, other = CertificateAuthority.create("one"), CertificateAuthority.create("two")
    der = ca.issue("a@localhost").leaf.public_bytes(serialization.Encoding.DER)
    both = gen.CertPool([other.certificate, ca.certificate])
    for _ in range(2):  # the second time from memory
        assert trust._anchor(der, ca.pool().fingerprints, ca.pool()) == ca.pool().fingerprints[0]
        assert trust._anchor(der, other.pool().fingerprints, other.pool()) is None
        assert trust._anchor(der, both.fingerprints, both) == ca.pool().fingerprints[0]


def test_policy_arguments_are_checked() -> None:
    cam = gen.create_cert_auth_manager(CertificateAuthority.create("x").issue("a@localhost"))
    assert cam.retired_policy() == (gen.RetiredPolicy.KEEP, 30.0)
    with pytest.raises(gen.ErrIncorrect):
        cam.set_retired_policy("sometimes", 1.0)  # type: ignore[arg-type]
    with pytest.raises(gen.ErrIncorrect):
        cam.set_retired_policy(gen.RetiredPolicy.DRAIN, -1)
    cam.set_retired_policy(gen.RetiredPolicy.DRAIN, 2)
    assert cam.retired_policy() == (gen.RetiredPolicy.DRAIN, 2.0)


# -- on running nodes


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[A, B, C]) as c:
        yield c
    assert wait_threads_gone(before) == []


class Stream:
    """Sequenced messages and calls from ``src`` to ``dst`` on a thread, until stopped."""

    def __init__(self, src: gen.Node, dst: gen.Node) -> None:
        self.got: queue.Queue[Any] = queue.Queue()
        self.sink = dst.spawn(Sink, self.got)
        self.echo = dst.spawn(Echo)
        self.src = src
        self.sent = 0
        self.replies: list[Any] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for _ in range(20):
                    self.src.send(self.sink, self.sent)
                    self.sent += 1
                self.replies.append(self.src.call(self.echo, self.sent, timeout=10))
                time.sleep(0.005)
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> list[Any]:
        """Stop; every message received, in arrival order."""
        self._stop.set()
        self._thread.join(20)
        received = [get(self.got) for _ in range(self.sent)]
        extra = []
        while True:
            try:
                extra.append(self.got.get(timeout=0.3))
            except queue.Empty:
                return received + extra


def test_drain_replaces_every_connection_under_a_removed_ca_losing_nothing(
    cluster: Cluster,
) -> None:
    names = [A, B, C]
    nodes = {n: cluster[n] for n in names}
    for n in names:  # a full mesh
        for m in names:
            if m != n:
                nodes[n].network().get_node(m)
    # Links and monitors across every connection that will be replaced.
    signals: queue.Queue[Any] = queue.Queue()
    targets = {n: nodes[n].spawn(Echo) for n in names}
    for n in names:
        for m in names:
            if m != n:
                nodes[n].spawn(Watcher, targets[m], signals, "link", "monitor")
    # CA rotation, overlap first, under KEEP: connections stay on the old CA's certificates.
    old_ca = cluster.ca
    new_ca = CertificateAuthority.create("rotated CA")
    both = gen.CertPool([old_ca.certificate, new_ca.certificate])
    for n in names:
        cluster.managers[n].set_client_cas(both)
        cluster.managers[n].set_root_cas(both)
    for n in names:
        cluster.managers[n].update(new_ca.issue(n, hosts=HOSTS))
    before = {(n, m): conn_id(nodes[n], m) for n in names for m in names if m != n}
    assert all(before.values())
    time.sleep(0.3)
    assert {(n, m): conn_id(nodes[n], m) for (n, m) in before} == before  # KEEP: untouched

    streams = [Stream(nodes[A], nodes[B]), Stream(nodes[C], nodes[A])]
    time.sleep(0.2)
    grace = 2.0
    started = time.monotonic()
    for n in names:  # drop the old CA, draining what it authenticated
        cluster.managers[n].set_retired_policy(gen.RetiredPolicy.DRAIN, grace)
        cluster.managers[n].set_client_cas(new_ca.pool())
        cluster.managers[n].set_root_cas(new_ca.pool())

    def replaced() -> bool:
        for (n, m), old in before.items():
            now_id = conn_id(nodes[n], m)
            info = nodes[n].network().info(m) if now_id else None
            if now_id in (None, old) or info is None:
                return False
            if info["peer_cert_fingerprint"] != cluster.managers[m].get_certificate().fingerprint:
                return False
        return True

    eventually(replaced, grace + 8.0, "not every connection was replaced")
    took = time.monotonic() - started
    time.sleep(0.2)
    for stream in streams:
        received = stream.stop()
        assert stream.errors == []
        assert received == list(range(stream.sent)), "lost, duplicated or reordered"
        assert len(stream.replies) > 0
        assert stream.replies == sorted(stream.replies)
    assert signals.empty(), f"actors saw {signals.get()}"
    # Grace is the budget for starting every replacement; each takes a handshake or two.
    assert took < grace + 6.0


def test_close_policy_closes_connections_under_a_removed_ca(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    target = b.spawn(Echo)
    signals: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, target, signals, "monitor")
    assert a.call(target, 1) == 1
    new_ca = CertificateAuthority.create("replacement CA")
    cam = cluster.managers[A]
    cam.set_retired_policy(gen.RetiredPolicy.CLOSE)
    # B's certificate stays from the old CA; A moves wholly to the new one.
    cam.update_all(
        a_cert := new_ca.issue(A, hosts=HOSTS), client_cas=new_ca.pool(), root_cas=new_ca.pool()
    )
    assert a_cert == cam.get_certificate()
    down = get(signals, 10)
    assert isinstance(down, gen.MessageDownPID)
    eventually(lambda: B not in a.network().nodes(), 5)


def test_keep_is_the_default_and_changes_nothing(cluster: Cluster) -> None:
    a = cluster[A]
    echo = cluster[B].spawn(Echo)
    assert a.call(echo, 1) == 1
    before = conn_id(a, B)
    cluster.rotate(A)
    time.sleep(0.5)
    assert conn_id(a, B) == before
    assert a.network().info(B)["local_cert_version"] == 1


@pytest.mark.parametrize("policy", [gen.RetiredPolicy.DRAIN, gen.RetiredPolicy.CLOSE])
def test_a_peer_certificate_expiring_redials_or_closes(policy: gen.RetiredPolicy) -> None:
    before = set(threading.enumerate())
    with Cluster(names=[A, B], start=False) as cluster:
        opts = cluster.node_options(B)
        cam_b = cluster.managers[B]
        start = datetime.now(UTC) - timedelta(seconds=1)
        short = cluster.ca.issue(B, hosts=HOSTS, valid_for=timedelta(seconds=4), not_before=start)
        cam_b.update(short)
        b = cluster.start(B, opts)
        a = cluster.start(A)
        cluster.managers[A].set_retired_policy(policy, 5.0)
        target = b.spawn(Echo)
        signals: queue.Queue[Any] = queue.Queue()
        a.spawn(Watcher, target, signals, "monitor")
        assert a.call(target, 1) == 1
        first = conn_id(a, B)
        assert a.network().info(B)["peer_cert_fingerprint"] == short.fingerprint
        # B renews before its certificate ends; its own policy keeps the connection.
        renewed = cluster.ca.issue(B, hosts=HOSTS)
        cam_b.update(renewed)
        left = (short.not_after - datetime.now(UTC)).total_seconds()
        if policy is gen.RetiredPolicy.DRAIN:
            time.sleep(max(left - 0.5, 0))
            assert conn_id(a, B) == first  # not before the expiry

            def redialed() -> bool:
                cid = conn_id(a, B)
                if cid in (None, first):
                    return False
                return bool(a.network().info(B)["peer_cert_fingerprint"] == renewed.fingerprint)

            eventually(redialed, 6.0)
            assert signals.empty()
            assert a.call(target, 2) == 2
        else:
            down = get(signals, left + 6.0)
            assert isinstance(down, gen.MessageDownPID)
            assert datetime.now(UTC) >= short.not_after
    assert wait_threads_gone(before) == []


@pytest.fixture
def mixed() -> Iterator[tuple[Cluster, CertificateAuthority]]:
    """A and B trusting two CAs; A's certificate from the second, B's from the cluster's."""
    before = set(threading.enumerate())
    with Cluster(names=[A, B]) as cluster:
        second = CertificateAuthority.create("second CA")
        both = gen.CertPool([cluster.ca.certificate, second.certificate])
        for n in (A, B):
            cluster.managers[n].set_client_cas(both)
            cluster.managers[n].set_root_cas(both)
        cluster.managers[A].update_all(second.issue(A, hosts=HOSTS))
        yield cluster, second
    assert wait_threads_gone(before) == []


def test_removing_the_ca_that_verified_a_peer_alone_drains_its_connection(
    mixed: tuple[Cluster, CertificateAuthority],
) -> None:
    cluster, second = mixed
    a, b = cluster[A], cluster[B]
    stream = Stream(a, b)
    time.sleep(0.2)
    first = conn_id(a, B)
    assert a.network().info(B)["local_cert_version"] == cluster.managers[A].version
    cluster.managers[B].update(second.issue(B, hosts=HOSTS))  # B moves first (B keeps)
    cam = cluster.managers[A]
    cam.set_retired_policy(gen.RetiredPolicy.DRAIN, 1.0)
    cam.set_client_cas(second.pool())  # A drops the CA that verified B
    cam.set_root_cas(second.pool())
    eventually(lambda: conn_id(a, B) not in (None, first), 8.0)
    received = stream.stop()
    assert stream.errors == []
    assert received == list(range(stream.sent))
    trust = a._core.observer.trust  # type: ignore[attr-defined]
    assert trust.counts[("replaced", "ca")] >= 1


def test_drain_now_closes_a_peer_whose_ca_was_revoked(
    mixed: tuple[Cluster, CertificateAuthority],
) -> None:
    """Emergency revoke: B still holds a certificate of the revoked CA; A cannot re-dial it."""
    cluster, second = mixed
    a, b = cluster[A], cluster[B]
    target = b.spawn(Echo)
    signals: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, target, signals, "monitor")
    assert a.call(target, 1) == 1
    cam = cluster.managers[A]
    cam.set_retired_policy(gen.RetiredPolicy.DRAIN, 0.0)
    cam.set_client_cas(second.pool())
    cam.set_root_cas(second.pool())
    assert isinstance(get(signals, 10), gen.MessageDownPID)
    with pytest.raises(gen.ErrNoConnection):
        a.call(target, 2)
