"""TLS-level refusals: said in the acceptor's log and in the dialer's error; never a leak."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from conftest import eventually, wait_threads_gone

from ergo_py import gen, lib
from ergo_py.testing import Cluster, Echo

A = "a@127.0.0.1"
B = "b@127.0.0.1"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[A, B], start=False) as c:
        yield c
    assert wait_threads_gone(before) == []


def _stranger(cluster: Cluster, name: str) -> gen.Node:
    """A node whose certificate comes from a CA the cluster does not trust."""
    options = cluster.node_options(name)
    stranger = lib.CertificateAuthority.create("stranger CA")
    cam = gen.create_cert_auth_manager(stranger.issue(name, hosts=("127.0.0.1",)))
    cam.set_root_cas(cluster.ca.pool())
    options.cert_manager = cam
    return cluster.start(name, options)


def test_an_unknown_client_ca_is_logged_by_the_acceptor_and_explained_to_the_dialer(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    b = cluster.start(B)
    b.spawn_register("pong", Echo)
    s = _stranger(cluster, "s@127.0.0.1")

    def acceptor_lines() -> list[str]:
        return [m for r in caplog.records if "refused a TLS handshake" in (m := r.getMessage())]

    with caplog.at_level(logging.INFO):
        with pytest.raises(gen.ErrNoConnection) as refused:
            s.call(gen.ProcessID("pong", B), 1, timeout=10)
        # The dialer may hear of the refusal before b's loop has logged it.
        eventually(lambda: bool(acceptor_lines()), what="the acceptor logs the refusal")
    assert "refused our TLS client certificate" in str(refused.value)
    assert B in acceptor_lines()[0] and "certificate" in acceptor_lines()[0]
    dialer_lines = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert any("s@127.0.0.1" in line for line in dialer_lines)


def test_refused_tls_handshakes_do_not_use_up_max_handshakes(cluster: Cluster) -> None:
    options = cluster.node_options(B)
    options.network.acceptors[0].max_handshakes = 2
    b = cluster.start(B, options)
    b.spawn_register("pong", Echo)
    s = _stranger(cluster, "s@127.0.0.1")
    for _ in range(5):  # more refusals than the acceptor has handshake slots
        with pytest.raises(gen.ErrNoConnection):
            s.call(gen.ProcessID("pong", B), 1, timeout=10)
    a = cluster.start(A)
    assert a.call(gen.ProcessID("pong", B), "still serving") == "still serving"
