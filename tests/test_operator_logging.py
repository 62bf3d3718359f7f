"""What an operator's log says about short admin sessions and failed handshakes."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable

import pytest

from ergo_py.lib import CertificateAuthority
from ergo_py.node import connections
from ergo_py.testing import Cluster

A, B = "a@127.0.0.1", "b@127.0.0.1"
LOGGER = "ergo_py.node.connections"


def wait_gone(cluster: Cluster, on: str, peer: str) -> None:
    deadline = time.monotonic() + 10
    while peer in cluster[on].network().nodes():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def levels(caplog: pytest.LogCaptureFixture, *words: str) -> list[int]:
    return [
        r.levelno
        for r in caplog.records
        if r.name == LOGGER
        and r.getMessage().startswith(f"{A}:")
        and all(w in r.getMessage() for w in words)
    ]


def test_a_short_session_dialled_in_is_logged_at_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER), Cluster(names=[A, B]) as cluster:
        cluster[B].network().get_node(A)  # b dials a, as ergo-py inspect does
        cluster.stop(B)
        wait_gone(cluster, A, B)
    assert levels(caplog, "connected to", B) == [logging.DEBUG]
    assert levels(caplog, B, "lost") == [logging.DEBUG]


def test_a_connection_that_stays_is_announced_at_info(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections, "QUIET_CONNECTION", 0.2)
    with caplog.at_level(logging.DEBUG, logger=LOGGER), Cluster(names=[A, B]) as cluster:
        cluster[B].network().get_node(A)
        deadline = time.monotonic() + 10
        while logging.INFO not in levels(caplog, "connected to", B):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        cluster.stop(B)
        wait_gone(cluster, A, B)
    assert levels(caplog, "connected to", B) == [logging.DEBUG, logging.INFO]
    assert any("(up 0.2 s)" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert levels(caplog, B, "lost") == [logging.INFO]


def handshake_log(caplog: pytest.LogCaptureFixture, client: Callable[[int], None]) -> str:
    """What node a logs about one TLS handshake ``client(port)`` makes."""
    with caplog.at_level(logging.INFO, logger="ergo_py.node.acceptor"), Cluster(names=[A]) as c:
        client(c[A].network().acceptors()[0].port)
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if "TLS handshake" in r.getMessage()]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    (record,) = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    return record.getMessage()


def test_a_client_refusing_our_certificate_is_logged_with_its_alert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = CertificateAuthority.create("a CA the node's certificate is not from")

    def client(port: int) -> None:
        ctx = ssl.create_default_context(cadata=other.to_pem()[0].decode())
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    text = handshake_log(caplog, client)
    assert "refused a TLS handshake" in text and "UNKNOWN_CA" in text


def test_a_client_hanging_up_mid_handshake_is_logged_with_what_to_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing

    text = handshake_log(caplog, client)
    assert "did not finish: the client closed the connection (" in text
    assert "check that it trusts the CA of our certificate" in text
