"""Admission budgets: clients stuck before TLS never lock peers out of an acceptor.

Floods come from loopback addresses (all of 127.0.0.0/8 is local on Linux);
the nodes listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from conftest import WAIT, wait_threads_gone

from ergo_py import gen
from ergo_py.net.handshake import NEED_DATA, DialerHandshake, HandshakeComplete, PeerIntroduced
from ergo_py.net.loop import new_event_loop
from ergo_py.net.tls import client_context_for_dial, server_tls_protocol
from ergo_py.node.acceptor import PreTLSBudget, source_of
from ergo_py.testing import Cluster, Pong

HOST = "127.0.0.1"
OTHER = "127.0.0.2"  # a second source address
A = "a@127.0.0.1"
B = "b@127.0.0.1"
FLOOD = 200


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[], cookie="cookie", start=False) as c:
        yield c
    assert wait_threads_gone(before) == []


def _start_b(cluster: Cluster, **acceptor: Any) -> tuple[gen.Node, int]:
    """Node B with its acceptor options overridden; serves "pong". Returns it and its port."""
    options = cluster.node_options(B)
    opts = options.network.acceptors[0]
    for key, value in acceptor.items():
        setattr(opts, key, value)
    b = cluster.start(B, options)
    b.spawn_register("pong", Pong)
    return b, opts.port


def _client_hello() -> bytes:
    """A real TLS 1.3 ClientHello, as a client's first flight."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def _flood(port: int, n: int, source: str = HOST, mixed: bool = False) -> list[socket.socket]:
    """``n`` TCP connections from ``source`` that never finish TLS.

    Silent ones; with ``mixed``, every fourth sends garbage and every fourth
    half a ClientHello.
    """
    hello = _client_hello()
    socks: list[socket.socket] = []
    for i in range(n):
        s = socket.socket()
        s.settimeout(WAIT)
        try:
            s.bind((source, 0))
            s.connect((HOST, port))
            if mixed and i % 4 == 1:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            elif mixed and i % 4 == 2:
                s.sendall(hello[: len(hello) // 2])
        except OSError:
            pass  # cut by the acceptor already: that is its business
        socks.append(s)
    return socks


def _close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_for(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@contextlib.contextmanager
def _tls_to_b(
    cluster: Cluster, source: str, port: int, name: str
) -> Iterator[tuple[ssl.SSLSocket, bytes]]:
    """A TLS connection to B from ``source`` as node ``name``; our certificate's fingerprint."""
    cam = gen.create_cert_auth_manager(cluster.ca.issue(name, hosts=(HOST,)))
    cam.set_root_cas(cluster.ca.pool())
    ctx, server_name = client_context_for_dial(cam, False)
    raw = socket.create_connection((HOST, port), timeout=WAIT, source_address=(source, 0))
    with ctx.wrap_socket(raw, server_hostname=server_name or HOST) as s:
        yield s, bytes.fromhex(cam.state().certificate.fingerprint)


def _handshake_from(cluster: Cluster, source: str, port: int, name: str) -> object:
    """Dial B from ``source`` by hand as node ``name`` (mTLS, then the Ergo handshake).

    Returns the dialer machine's last event (``HandshakeComplete`` when B let it in).
    """
    with _tls_to_b(cluster, source, port, name) as (s, local_fp):
        der = s.getpeercert(True)
        assert der is not None
        machine = DialerHandshake(
            node_name=name,
            creation=int(time.time()),
            peer_name=B,
            cookie=cluster.cookie,
            local_cert_fp=local_fp,
            peer_cert_fp=hashlib.sha256(der).digest(),
        )
        s.sendall(machine.initiate())
        while True:
            event = machine.next_event()
            if isinstance(event, PeerIntroduced):
                machine.admit()
                continue
            out = machine.data_to_send()
            if out:
                s.sendall(out)
            if event is not NEED_DATA:
                if isinstance(event, HandshakeComplete):
                    # B is up once our final Accept is in: wait for it, then leave.
                    assert _wait_for(lambda: name in cluster.nodes[B].network().nodes())
                return event
            data = s.recv(65536)
            if not data:
                return "closed by B"
            machine.receive_data(data)


# --- the budget itself (no network) ---------------------------------------------------


def test_a_source_over_its_share_loses_its_own_oldest_connection() -> None:
    budget: PreTLSBudget[str] = PreTLSBudget(limit=10, per_source=3)
    assert [budget.admit(k, "x") for k in ("x1", "x2", "x3")] == [None, None, None]
    victim = budget.admit("x4", "x")
    assert victim is not None and victim[0] == "x1" and "share" in victim[1]
    assert budget.held("x") == 3 and "x4" in budget and "x1" not in budget


def test_a_full_budget_cuts_the_source_holding_the_most_never_a_lighter_one() -> None:
    budget: PreTLSBudget[str] = PreTLSBudget(limit=4, per_source=3)
    for key, source in (("x1", "x"), ("y1", "y"), ("x2", "x"), ("x3", "x")):
        assert budget.admit(key, source) is None
    victim = budget.admit("z1", "z")  # full: x holds the most
    assert victim is not None and victim[0] == "x1" and "holds the most" in victim[1]
    victim = budget.admit("y2", "y")  # y holds fewer than x: x's oldest goes
    assert victim is not None and victim[0] == "x2"
    victim = budget.admit("y3", "y")  # y holds the most itself now: its own oldest goes
    assert victim is not None and victim[0] == "y1"
    assert (len(budget), budget.held("x"), budget.held("y"), budget.held("z")) == (4, 1, 2, 1)


def test_a_budget_release_is_counted_once() -> None:
    budget: PreTLSBudget[str] = PreTLSBudget(limit=2, per_source=2)
    budget.admit("x1", "x")
    assert budget.release("x1") is True
    assert budget.release("x1") is False
    assert len(budget) == 0 and budget.held("x") == 0


def test_sources_are_addresses_and_ipv6_counts_by_its_64() -> None:
    assert source_of(("127.0.0.1", 5000)) == "127.0.0.1"
    assert source_of(("2001:db8::1", 5000, 0, 0)) == source_of(("2001:db8::ffff", 1, 0, 0))
    assert source_of(("2001:db8::1", 5000, 0, 0)) != source_of(("2001:db8:0:1::1", 1, 0, 0))
    assert source_of(("::ffff:10.0.0.1", 5000, 0, 0)) == "10.0.0.1"


# --- on the wire ----------------------------------------------------------------------


def test_a_tls_handshake_our_side_aborts_is_reported_as_failed() -> None:
    """The acceptor cuts pending handshakes with abort(): the TLS layer still reports them."""
    from ergo_py.lib import generate_self_signed_cert

    manager = gen.create_cert_manager(generate_self_signed_cert("t", HOST))
    reports: list[tuple[Any, BaseException | None]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def start(peer: Any, transport: asyncio.BaseTransport) -> None:
            cast(asyncio.Transport, transport).abort()

        def factory() -> asyncio.BaseProtocol:
            return server_tls_protocol(
                loop,
                asyncio.Protocol(),
                manager.server_context(),
                30.0,
                lambda peer, exc: reports.append((peer, exc)),
                start,
            )

        server = await loop.create_server(factory, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(HOST, port)
        for _ in range(100):  # bounded: 5 s at most
            if reports:
                break
            await asyncio.sleep(0.05)
        writer.close()
        server.close()
        await server.wait_closed()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert len(reports) == 1
    assert isinstance(reports[0][1], ConnectionError)


def test_a_pre_tls_flood_from_one_address_does_not_lock_out_a_node(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    b, port = _start_b(cluster)
    a = cluster.start(A)
    with caplog.at_level(logging.INFO, logger="ergo_py.node.acceptor"):
        flood = _flood(port, FLOOD, mixed=True)
        try:
            started = time.monotonic()
            assert a.call(gen.ProcessID("pong", B), 1) == ("pong", 1)
            took = time.monotonic() - started
        finally:
            _close_all(flood)
    assert took < 1.0, f"connecting took {took:.2f} s behind the flood"
    acceptor = [r for r in caplog.records if r.name == "ergo_py.node.acceptor"]
    assert any("its share" in r.getMessage() for r in acceptor), "cuts are logged with why"
    assert all(r.levelno <= logging.INFO for r in acceptor), "anonymous clients: INFO at most"
    assert b.network().nodes() == [A]


def test_a_silent_tls_client_is_cut_at_the_tls_deadline(cluster: Cluster) -> None:
    _, port = _start_b(cluster, tls_handshake_timeout=0.5, handshake_timeout=30.0)
    hello = _client_hello()
    for dribble in (False, True):  # silent; a slowloris ClientHello, a byte at a time
        with socket.create_connection((HOST, port), timeout=WAIT) as s:
            started = time.monotonic()
            cut = False
            for i in range(200):  # bounded: 20 s at most
                if dribble and i < len(hello):
                    with contextlib.suppress(OSError):
                        s.sendall(hello[i : i + 1])
                s.settimeout(0.1)
                try:
                    if s.recv(1024) == b"":
                        cut = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    cut = True
                    break
            took = time.monotonic() - started
        assert cut, "the acceptor must cut the client"
        assert 0.3 < took < 10.0, f"cut after {took:.2f} s (deadline 0.5 s, handshake 30 s)"


def test_a_second_address_gets_in_while_one_address_fills_the_tls_stage(
    cluster: Cluster,
) -> None:
    # 127.0.0.1 may hold every pre-TLS slot; a connection from elsewhere
    # still gets in (it cuts the heaviest source's oldest) and through the
    # Ergo handshake.
    _, port = _start_b(cluster, max_pre_tls=16, max_pre_tls_per_source=16, max_handshakes=4)
    flood = _flood(port, FLOOD)
    try:
        for i in range(3):
            started = time.monotonic()
            event = _handshake_from(cluster, OTHER, port, f"c{i}@127.0.0.1")
            took = time.monotonic() - started
            assert isinstance(event, HandshakeComplete), event
            assert took < WAIT
    finally:
        _close_all(flood)


def test_the_node_holds_a_bounded_share_of_a_flood_and_leaks_no_fds(cluster: Cluster) -> None:
    _, port = _start_b(cluster, max_pre_tls_per_source=8, tls_handshake_timeout=30.0)
    a = cluster.start(A)
    assert a.call(gen.ProcessID("pong", B), 0) == ("pong", 0)
    base = _open_fds()
    flood = _flood(port, 100)
    try:
        with _tls_to_b(cluster, OTHER, port, "c@127.0.0.1"):
            pass  # accepted after the flood: B has taken in all of it now
        # Ours are 100; B's side of them is cut down to its per-source share
        # at once (the TLS deadline, 30 s, plays no part).
        assert _wait_for(lambda: _open_fds() - base - len(flood) <= 8 + 2, timeout=2.0), (
            f"B holds {_open_fds() - base - len(flood)} of the flood's connections"
        )
        assert a.call(gen.ProcessID("pong", B), 1) == ("pong", 1)
    finally:
        _close_all(flood)
    assert _wait_for(lambda: _open_fds() <= base + 2), f"{_open_fds() - base} fds more"
    assert a.call(gen.ProcessID("pong", B), 2) == ("pong", 2)


def test_stopping_a_node_ends_the_connections_it_was_admitting(cluster: Cluster) -> None:
    b, port = _start_b(cluster, tls_handshake_timeout=30.0)
    flood = _flood(port, 10)
    try:
        time.sleep(0.2)  # accepted
        b.stop()
        for s in flood:
            s.settimeout(WAIT)
            try:
                data = s.recv(1024)
            except TimeoutError:
                pytest.fail("a connection under admission outlived its node")
            except OSError:
                data = b""  # reset: ended too
            assert data == b""
    finally:
        _close_all(flood)


def test_acceptors_report_their_admission_budgets(cluster: Cluster) -> None:
    b, _ = _start_b(cluster, max_pre_tls=100, max_pre_tls_per_source=10, tls_handshake_timeout=1.5)
    (info,) = b.network().acceptors()
    assert (info.max_pre_tls, info.max_pre_tls_per_source, info.tls_handshake_timeout) == (
        100,
        10,
        1.5,
    )
    assert info.max_handshakes == gen.AcceptorOptions().max_handshakes
