"""Slow and stalled links: ``testing.Relay`` and ``Cluster.delay`` / ``stall`` / ``unstall``.

There is no netem here: a relay in user space holds the bytes. A stalled
link sends no FIN and no RST and passes nothing, so only keepalive can find
out; a delayed one shows in every call's round trip. Bounds are generous:
the machine is shared.
"""

from __future__ import annotations

import concurrent.futures
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import wait_threads_gone

from ergo_py import gen
from ergo_py.gen.options import KEEPALIVE_MISSES
from ergo_py.testing import Cluster, Echo
from ergo_py.testing.relay import Relay

A = "a@127.0.0.1"
B = "b@127.0.0.1"
PERIOD = 0.3
BOUND = KEEPALIVE_MISSES * PERIOD
SLACK = 2.5
DELAY = 0.25


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[:2]  # type: ignore[misc]
    server.shutdown()
    server.server_close()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def test_a_relay_passes_bytes_in_order_and_delays_each_way(echo_server: tuple[str, int]) -> None:
    relay = Relay(echo_server)
    try:
        with socket.create_connection((relay.host, relay.port), timeout=10) as s:
            payload = bytes(range(256)) * 2000  # 512 KB: many chunks, one order
            s.sendall(payload)
            assert _recv_exactly(s, len(payload)) == payload
            relay.set_delay(DELAY)
            start = time.monotonic()
            s.sendall(b"ping")
            assert _recv_exactly(s, 4) == b"ping"
            assert time.monotonic() - start >= 2 * DELAY * 0.9  # there and back
        assert relay.connections == 1
        with pytest.raises(gen.ErrIncorrect):
            relay.set_delay(-1)
    finally:
        relay.close()


def test_a_stalled_relay_holds_bytes_and_unstall_lets_them_through(
    echo_server: tuple[str, int],
) -> None:
    relay = Relay(echo_server)
    try:
        with socket.create_connection((relay.host, relay.port), timeout=10) as s:
            s.sendall(b"a")
            assert _recv_exactly(s, 1) == b"a"
            relay.stall()
            s.sendall(b"held")
            s.settimeout(0.5)
            with pytest.raises(TimeoutError):
                s.recv(16)  # nothing comes back, and the connection stays open
            relay.unstall()
            s.settimeout(10)
            assert _recv_exactly(s, 4) == b"held"
    finally:
        relay.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[A, B], start=False) as c:
        for name in (A, B):
            options = c.node_options(name)
            options.network.keepalive_period = PERIOD
            options.network.handshake_timeout = 1.0  # a dial into a stalled link gives up soon
            c.start(name, options)
        yield c
    assert c.relays == {}
    assert wait_threads_gone(before) == []  # relay threads end with the cluster


def test_a_delayed_link_shows_in_call_latency(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(Echo)
    assert a.call(echo, 0) == 0
    before = a.network().info(B)["connection_id"]
    cluster.delay(A, B, DELAY)
    start = time.monotonic()
    assert a.call(echo, 1, timeout=10) == 1
    took = time.monotonic() - start
    assert took >= 2 * DELAY * 0.9  # the request and the reply each held DELAY
    # the connection moved onto the relay, and a dialled it through its relay
    assert a.network().info(B)["connection_id"] != before
    assert cluster.relays[(A, B)].connections >= 1
    cluster.delay(A, B, 0)
    start = time.monotonic()
    assert a.call(echo, 2) == 2
    assert time.monotonic() - start < took


def test_a_stalled_link_is_detected_within_the_keepalive_bound(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(Echo)
    cluster.delay(A, B, 0)  # onto the relay first: the stall then hits a live connection
    assert a.call(echo, 0) == 0
    cluster.stall(A, B)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        pending = pool.submit(a.call, echo, 1, 60.0)
        with pytest.raises(gen.ErrNoConnection):
            pending.result(timeout=BOUND + SLACK + 5)
        assert time.monotonic() - start < BOUND + SLACK
    with pytest.raises(gen.ErrNoConnection):  # a new connection cannot get through either
        a.call(echo, 2, timeout=5)
    cluster.unstall(A, B)
    deadline = time.monotonic() + 10
    while True:  # the far side may still be tearing the old connection down
        try:
            assert a.call(echo, 3, timeout=2) == 3
            break
        except (gen.ErrNoConnection, gen.ErrTimeout):
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_link_faults_need_two_known_nodes(cluster: Cluster) -> None:
    with pytest.raises(gen.ErrIncorrect):
        cluster.stall(A, A)
    with pytest.raises(gen.ErrIncorrect):
        cluster.delay(A, "nobody@127.0.0.1", 1)
    assert cluster.relays == {}
