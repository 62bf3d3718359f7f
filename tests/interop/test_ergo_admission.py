"""An ergo acceptor under hostile or broken clients: each refused, the Go peer still served.

The acceptor has our own acceptor's admission (per-source pre-TLS budget,
``max_handshakes``, both deadlines) and the link's limits (a packet's length
prefix against ``max_message_size``, a handshake message's size). A broken
client is cut with the reason in the log; a packet whose body does not
decode is skipped with its reason, and the link carries on (as Ergo does).
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ergo_rawpeer import HOST, RawErgoPeer, closed_by_node, tls_client
from interop_pair import (  # noqa: F401  (fixtures)
    COOKIE,
    GO,
    PY,
    WAIT,
    Pair,
    SenderSink,
    binary_fixture,
    go_args_fixture,
    go_echo,
    pair_fixture,
)

from ergo_py import gen
from ergo_py.net.ergo import enp
from ergo_py.net.ratelog import LogLimiter
from ergo_py.node import ergo_link

pytestmark = pytest.mark.timeout(300)

TIMEOUT = 0.5
LIMIT = 64 << 10


@pytest.fixture
def ergo_acceptor() -> gen.AcceptorOptions:
    return gen.AcceptorOptions(
        host="127.0.0.1",
        port=0,
        protocol="ergo",
        handshake_timeout=TIMEOUT,
        tls_handshake_timeout=TIMEOUT,
        max_handshakes=2,
        max_pre_tls_per_source=2,
        max_message_size=LIMIT,
    )


@pytest.fixture(autouse=True)
def unlimited_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh log budgets: each test sees its own refusals logged."""
    monkeypatch.setattr(ergo_link, "_limited", LogLimiter(ergo_link.log))
    yield


@pytest.fixture
def sink(pair: Pair) -> queue.Queue[Any]:
    out: queue.Queue[Any] = queue.Queue()
    pair.node.spawn_register("sink", SenderSink, out)
    pair.go_routes_to_python()
    return out


def assert_serving(pair: Pair, word: str) -> None:
    """Both ways still work, over a fresh connection dialled by the Go peer."""
    if GO in pair.node.network().nodes():
        pair.node.network().disconnect(GO)
    assert pair.peer.command(f"callone {PY} sink {word}") == f"ok string {word}"
    assert pair.node.call(go_echo(), word) == word
    assert pair.node.network().info(GO)["dialed"] is False


def logged(caplog: pytest.LogCaptureFixture, text: str, deadline: float = WAIT) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for record in caplog.records:
            if text in record.getMessage():
                return record.getMessage()
        time.sleep(0.02)
    raise AssertionError(
        f"nothing logged with {text!r}: {[r.getMessage() for r in caplog.records]}"
    )


def test_a_stalled_handshake_is_cut_at_its_deadline(
    pair: Pair, sink: queue.Queue[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    silent_tcp = socket.create_connection((HOST, pair.port))  # never starts TLS
    silent_ehs = tls_client(socket.create_connection((HOST, pair.port)))  # TLS, then nothing
    start = time.monotonic()
    assert closed_by_node(silent_ehs, WAIT) and closed_by_node(silent_tcp, WAIT)
    assert time.monotonic() - start < TIMEOUT + 3.0
    assert f"in {TIMEOUT} s" in logged(caplog, "the Ergo handshake did not finish")
    logged(caplog, "dropped a TLS handshake")
    assert_serving(pair, "after-stall")


def test_a_plaintext_client_on_the_tls_port_is_refused(
    pair: Pair, sink: queue.Queue[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    plain = socket.create_connection((HOST, pair.port))
    plain.sendall(struct.pack(">BBI", 87, 1, 5) + b"hello")  # an EHS message, no TLS
    assert closed_by_node(plain, WAIT)
    line = logged(caplog, "refused a TLS handshake")
    assert "127.0.0.1" in line
    assert_serving(pair, "after-plaintext")


def test_handshakes_beyond_the_limit_are_refused_busy(
    pair: Pair, sink: queue.Queue[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    held = [tls_client(socket.create_connection((HOST, pair.port))) for _ in range(2)]
    time.sleep(0.1)  # both past TLS, in the Ergo handshake: the two places are taken
    third = tls_client(socket.create_connection((HOST, pair.port)))
    assert closed_by_node(third, TIMEOUT / 2)  # at once, not at the deadline
    assert "busy" in logged(caplog, "busy")
    for sock in held:
        assert closed_by_node(sock, WAIT)  # their deadline
    assert_serving(pair, "after-busy")


def test_connections_beyond_the_per_source_pre_tls_budget_cut_the_oldest(
    pair: Pair, sink: queue.Queue[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first, second = (socket.create_connection((HOST, pair.port)) for _ in range(2))
    time.sleep(0.05)
    third = socket.create_connection((HOST, pair.port))
    assert closed_by_node(first, TIMEOUT / 2)  # cut to make room, before any deadline
    assert "its share" in logged(caplog, "cut to make room")
    for sock in (second, third):
        sock.close()
    assert_serving(pair, "after-flood")


def test_an_oversized_packet_closes_the_link(
    pair: Pair, sink: queue.Queue[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = RawErgoPeer(pair.port, "raw@localhost", COOKIE)
    assert raw.handshake().peer == PY
    raw.send_bytes(struct.pack(">BBIBB", enp.MAGIC, enp.VERSION, LIMIT + 1, 1, 0))
    assert raw.closed_by_node(WAIT)
    assert "limit" in logged(caplog, f"ENP packet of {LIMIT + 1} bytes")
    deadline = time.monotonic() + WAIT
    while "raw@localhost" in pair.node.network().nodes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "raw@localhost" not in pair.node.network().nodes()
    assert_serving(pair, "after-oversized")


def test_an_oversized_handshake_message_is_refused(
    pair: Pair, sink: queue.Queue[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sock = tls_client(socket.create_connection((HOST, pair.port)))
    sock.sendall(struct.pack(">BBI", 87, 1, 0x10000))
    assert closed_by_node(sock, TIMEOUT / 2)
    logged(caplog, "handshake message of 65536 bytes")
    assert_serving(pair, "after-big-hello")


def test_a_malformed_term_is_skipped_and_the_link_carries_on(
    pair: Pair, sink: queue.Queue[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = RawErgoPeer(pair.port, "raw@localhost", COOKIE)
    raw.handshake()
    assert raw.codec is not None
    me = gen.PID("raw@localhost", 1000, raw.creation)
    good = raw.codec.send(me, gen.ProcessID("sink", PY), "first")
    # The same packet with its term's type tag replaced by one EDF does not have.
    bad = bytearray(good)
    bad[-len(b"first") - 3] = 0xEE
    raw.send_bytes(bytes(bad) + raw.codec.send(me, gen.ProcessID("sink", PY), "second"))
    sender, message = sink.get(timeout=WAIT)
    assert (sender, message) == (me, "second")
    assert "EDF" in logged(caplog, "a packet skipped")
    # Broken framing is not skipped: the link ends.
    raw.send_bytes(b"\x00" * 16)
    assert raw.closed_by_node(WAIT)
    logged(caplog, "not an ENP packet")
    # A malformed handshake message ends the handshake.
    broken = tls_client(socket.create_connection((HOST, pair.port)))
    broken.sendall(struct.pack(">BBI", 87, 1, 3) + b"\xee\x01\x02")
    assert closed_by_node(broken, TIMEOUT / 2)
    assert_serving(pair, "after-malformed")
