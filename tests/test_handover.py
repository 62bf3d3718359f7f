"""Graceful close and hand-over of node connections: nothing in flight is lost."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import WAIT, get, wait_threads_gone

from ergo_py import act, gen
from ergo_py.testing import Cluster, Sink, Watcher

A = "a@127.0.0.1"
B = "b@127.0.0.1"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[A, B]) as c:
        yield c
    assert wait_threads_gone(before) == []


class SleepyEcho(act.Actor):
    """Replies to calls (after ``("sleep", s, v)`` sleeps first); sends bursts on request."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if isinstance(request, tuple) and request[0] == "sleep":
            time.sleep(request[1])
            return request[2]
        return request

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        if isinstance(message, tuple) and message[0] == "burst":
            _, to, n = message
            for i in range(n):
                self.send(to, i)


def _drain(q: queue.Queue[Any], n: int) -> list[Any]:
    return [q.get(timeout=WAIT) for _ in range(n)]


def _idle(q: queue.Queue[Any], seconds: float = 0.3) -> bool:
    try:
        q.get(timeout=seconds)
    except queue.Empty:
        return True
    return False


def test_disconnect_delivers_what_both_sides_had_in_flight(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    on_b: queue.Queue[Any] = queue.Queue()
    on_a: queue.Queue[Any] = queue.Queue()
    sink_b = b.spawn(Sink, on_b)
    sink_a = a.spawn(Sink, on_a)
    echo = b.spawn(SleepyEcho)
    a.send(echo, ("burst", sink_a, 3000))
    for i in range(3000):
        a.send(sink_b, i)
    a.network().disconnect(B)
    assert _drain(on_b, 3000) == list(range(3000))
    assert _drain(on_a, 3000) == list(range(3000))


def test_disconnect_fires_links_and_monitors_after_the_drain(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    target = b.spawn(SleepyEcho)
    out: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, target, out, "link", "monitor")
    assert a.call(target, "ready") == "ready"  # link and monitor have crossed
    a.network().disconnect(B)
    got = {type(get(out)), type(get(out))}
    assert got == {gen.MessageExitPID, gen.MessageDownPID}
    assert B not in a.network().nodes()


def test_a_reply_in_flight_during_disconnect_still_arrives(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(SleepyEcho)
    results: queue.Queue[Any] = queue.Queue()

    def call() -> None:
        try:
            results.put(a.call(echo, "quick"))
        except gen.ErgoError as exc:
            results.put(exc)

    assert a.call(echo, "warm") == "warm"
    t = threading.Thread(target=call)
    t.start()
    a.network().disconnect(B)
    t.join(WAIT)
    # Either the reply crossed before the drain ended, or the call failed at
    # once with ErrNoConnection; never a timeout, never a hang.
    result = get(results)
    assert result == "quick" or isinstance(result, gen.ErrNoConnection)


def test_reconnect_is_invisible_to_links_monitors_and_pending_calls(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    target = b.spawn(SleepyEcho)
    signals: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, target, signals, "link", "monitor")
    assert a.call(target, "ready") == "ready"
    results: queue.Queue[Any] = queue.Queue()

    def slow_call() -> None:
        try:
            results.put(a.call(target, ("sleep", 0.5, "late"), timeout=10))
        except gen.ErgoError as exc:
            results.put(exc)

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(0.1)
    a.network().reconnect(B)
    t.join(WAIT)
    assert get(results) == "late"
    assert _idle(signals)  # no exit, no down
    # The records moved to the new connection: ending the target still fires them.
    b.send_exit(target, "bye")
    got = {type(get(signals)), type(get(signals))}
    assert got == {gen.MessageExitPID, gen.MessageDownPID}


@pytest.mark.parametrize("side", ["dialer", "acceptor"])
def test_reconnect_under_load_loses_and_reorders_nothing(cluster: Cluster, side: str) -> None:
    a, b = cluster[A], cluster[B]
    on_b: queue.Queue[Any] = queue.Queue()
    sink_b = b.spawn(Sink, on_b)
    on_a: queue.Queue[Any] = queue.Queue()
    sink_a = a.spawn(Sink, on_a)
    echo = b.spawn(SleepyEcho)
    a.send(sink_b, -1)
    assert on_b.get(timeout=WAIT) == -1
    renewer = a if side == "dialer" else b
    peer = B if side == "dialer" else A
    n = 20_000
    stop = threading.Event()

    def renew() -> None:
        for _ in range(4):
            if stop.is_set():
                return
            renewer.network().reconnect(peer)
            time.sleep(0.05)

    t = threading.Thread(target=renew)
    t.start()
    a.send(echo, ("burst", sink_a, n))
    for i in range(n):
        a.send(sink_b, i)
    t.join(4 * WAIT)
    stop.set()
    assert _drain(on_b, n) == list(range(n))
    assert _drain(on_a, n) == list(range(n))
    assert _idle(on_b, 0.1) and _idle(on_a, 0.1)  # and nothing twice


def test_reconnect_moves_the_connection_onto_the_rotated_certificate(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(SleepyEcho)
    assert a.call(echo, 1) == 1
    before = a.network().info(B)
    cert = cluster.rotate(A)
    assert a.network().info(B)["local_cert_fingerprint"] == before["local_cert_fingerprint"]
    a.network().reconnect(B)
    after = a.network().info(B)
    assert after["local_cert_fingerprint"] == cert.fingerprint
    assert after["local_cert_version"] > before["local_cert_version"]
    assert b.network().info(A)["peer_cert_fingerprint"] == cert.fingerprint
    assert a.call(echo, 2) == 2


def test_reconnect_when_not_connected_connects(cluster: Cluster) -> None:
    a = cluster[A]
    assert B not in a.network().nodes()
    a.network().reconnect(B)
    assert B in a.network().nodes()


def test_reconnect_from_both_sides_at_once_ends_with_one_connection(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(SleepyEcho)
    assert a.call(echo, 0) == 0
    errors: list[BaseException] = []

    def renew(node: gen.Node, peer: str) -> None:
        try:
            node.network().reconnect(peer)
        except gen.ErgoError as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=renew, args=(a, B)),
        threading.Thread(target=renew, args=(b, A)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * WAIT)
    assert errors == []
    assert a.call(echo, 1) == 1
    ids_a = a.network().info(B)["connection_id"]
    assert ids_a == b.network().info(A)["connection_id"]
    assert a.network().nodes() == [B] and b.network().nodes() == [A]


def _on_loop(node: gen.Node, fn: Any) -> None:
    """Run ``fn()`` on ``node``'s network loop thread and wait for it."""
    backend: Any = node.network()._backend  # type: ignore[attr-defined]

    async def run() -> None:
        fn()

    backend._ctx.lt.run(run(), timeout=WAIT)


def test_frames_on_the_new_connection_wait_for_the_old_one(cluster: Cluster) -> None:
    """White-box: B stops reading the old links, so the new connection's frames come first."""
    a, b = cluster[A], cluster[B]
    on_b: queue.Queue[Any] = queue.Queue()
    sink = b.spawn(Sink, on_b)
    a.send(sink, -1)
    assert get(on_b) == -1
    old_links = list(b.network()._backend.current(A).links)  # type: ignore[attr-defined]
    _on_loop(b, lambda: [link._transport.pause_reading() for link in old_links])
    for i in range(100):
        a.send(sink, i)  # on the old connection, unread by B for now
    time.sleep(0.1)
    a.network().reconnect(B)
    for i in range(100, 200):
        a.send(sink, i)  # on the new connection
    assert _idle(on_b, 0.5)  # held back: nothing overtakes the old connection's frames
    _on_loop(b, lambda: [link._transport.resume_reading() for link in old_links])
    assert _drain(on_b, 200) == list(range(200))


def test_a_refused_reconnect_leaves_the_working_connection_up(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(SleepyEcho)
    assert a.call(echo, 1) == 1
    fingerprint = a.network().info(B)["local_cert_fingerprint"]
    # B moves to another CA altogether: it no longer trusts A's issuer (nor A B's).
    from ergo_py.lib import CertificateAuthority

    other = CertificateAuthority.create("another CA")
    cluster.managers[B].update_all(
        other.issue(B, hosts=("127.0.0.1",)), client_cas=other.pool(), root_cas=other.pool()
    )
    with pytest.raises(gen.ErrNoConnection) as refused:
        a.network().reconnect(B)
    assert "certificate" in str(refused.value).lower()
    assert a.call(echo, 2) == 2  # the old connection carries on
    assert a.network().info(B)["local_cert_fingerprint"] == fingerprint


def test_a_sender_to_a_peer_that_does_not_read_is_held_back(cluster: Cluster) -> None:
    """Back-pressure: the sending thread blocks instead of buffering without bound."""
    a, b = cluster[A], cluster[B]
    on_b: queue.Queue[Any] = queue.Queue()
    sink = b.spawn(Sink, on_b)
    a.send(sink, -1)
    assert get(on_b) == -1
    b_links = list(b.network()._backend.current(A).links)  # type: ignore[attr-defined]
    _on_loop(b, lambda: [link._transport.pause_reading() for link in b_links])
    chunk = b"x" * (64 << 10)
    n = 400  # 25 MiB: far more than socket buffers and the high-water mark hold
    done = threading.Event()

    def flood() -> None:
        for i in range(n):
            a.send(sink, (i, chunk))
        done.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    assert not done.wait(1.0), "the sender was never held back"
    buffered: list[int] = []
    a_links = list(a.network()._backend.current(B).links)  # type: ignore[attr-defined]
    _on_loop(a, lambda: buffered.extend(x._transport.get_write_buffer_size() for x in a_links))
    assert max(buffered) < 8 << 20
    _on_loop(b, lambda: [link._transport.resume_reading() for link in b_links])
    assert done.wait(4 * WAIT)
    assert [on_b.get(timeout=WAIT)[0] for _ in range(n)] == list(range(n))


def test_closed_connections_leave_the_draining_queue(cluster: Cluster) -> None:
    """A connect/disconnect loop does not pile up closed connections on either side.

    New connections consult the draining queue (to hold frames behind an old
    connection); closed ones must not stay in it, or each cycle gets slower.
    """
    a, b = cluster[A], cluster[B]
    b.spawn_register("echo", SleepyEcho)
    target = gen.ProcessID("echo", B)
    for i in range(10):
        assert a.call(target, i, timeout=WAIT) == i
        a.network().disconnect(B)
    for node in (a, b):
        table: Any = node.network()._backend._table  # type: ignore[attr-defined]
        # Well inside the drain timeout, after which closed ones are forgotten anyway.
        assert table.drain_timeout >= 3.0
        deadline = time.monotonic() + 1.0
        while table.draining and time.monotonic() < deadline:
            time.sleep(0.01)
        assert table.draining == {}
    assert a.call(target, "again", timeout=WAIT) == "again"
