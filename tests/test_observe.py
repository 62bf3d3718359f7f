"""Observability: node events, health(), and Prometheus metrics over HTTPS."""

from __future__ import annotations

import queue
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Recorder, get, wait_threads_gone

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


def events(q: queue.Queue[Any], kind: type, timeout: float = 10.0) -> Any:
    """The next event of ``kind`` the recorder got (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        _, msg = get(q, max(deadline - time.monotonic(), 0.01))
        if isinstance(msg, kind):
            return msg


def client_ctx(cluster: Cluster) -> ssl.SSLContext:
    """Trusts the cluster's CA and presents a certificate from it (the cluster is mTLS)."""
    ctx = ssl.create_default_context(cadata=cluster.ca.pool().to_pem())
    cert_pem, key_pem = cluster.ca.issue("scraper@127.0.0.1").to_pem()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "client.pem"
        path.write_bytes(cert_pem + key_pem)
        ctx.load_cert_chain(path)
    return ctx


def scrape(cluster: Cluster, node: gen.Node) -> str:
    port = node.metrics_port()
    r = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=client_ctx(cluster), timeout=10)
    assert r.status_code == 200
    return r.text


def value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_subscriber_gets_cert_updated_then_connection_down_in_order(cluster: Cluster) -> None:
    a = cluster.start(A)
    b = cluster.start(B)
    b.spawn_register("pong", Echo)
    out: queue.Queue[Any] = queue.Queue()
    pid = a.spawn(Recorder, out)
    a.subscribe(pid, gen.EventCertUpdated, gen.EventConnectionDown, gen.EventConnectionUp)
    assert a.call(gen.ProcessID("pong", B), 1, timeout=10) == 1
    up = events(out, gen.EventConnectionUp)
    assert up.node == B and up.info["peer_fingerprint"]
    cm = a.cert_manager()
    assert cm is not None
    cm.update(cluster.ca.issue(A, hosts=("127.0.0.1",)))
    a.network().disconnect(B)
    got = [events(out, gen.EventCertUpdated), events(out, gen.EventConnectionDown)]
    assert got[0].version == 2 and got[0].fingerprint == cm.get_certificate().fingerprint
    assert got[1].node == B and got[0].at <= got[1].at
    a.unsubscribe(pid)
    cm.update(cluster.ca.issue(A, hosts=("127.0.0.1",)))
    with pytest.raises(queue.Empty):
        events(out, gen.EventCertUpdated, timeout=0.3)


def test_rejected_update_and_trust_change_are_events_and_a_dead_subscriber_is_dropped(
    cluster: Cluster,
) -> None:
    a = cluster.start(A)
    out: queue.Queue[Any] = queue.Queue()
    pid = a.spawn(Recorder, out)
    a.subscribe(pid)  # everything
    cm = a.cert_manager()
    assert isinstance(cm, gen.CertAuthManager)
    other = lib.CertificateAuthority.create("other CA")
    # An expired certificate is refused; the old one stays.
    start = datetime.now(UTC) - timedelta(hours=2)
    with pytest.raises(gen.CertificateError):
        cm.update(cluster.ca.issue(A, valid_for=timedelta(hours=1), not_before=start))
    assert "expired" in events(out, gen.EventCertRejected).reason
    pool = cluster.ca.pool()
    pool.add(other.certificate)
    cm.set_client_cas(pool)
    changed = events(out, gen.EventTrustChanged)
    assert changed.added == other.pool().fingerprints and changed.removed == ()
    a.send(pid, "stop")
    get(out)  # ("terminate", ...)
    observer = a._core.observer  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while pid in observer._subs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid not in observer._subs  # an ended subscriber is forgotten
    # ... and delivery to a subscriber that is gone drops it too.
    observer.subscribe(pid, ())
    cm.update(cluster.ca.issue(A, hosts=("127.0.0.1",)))
    assert pid not in observer._subs


def test_health_goes_not_ready_a_week_before_the_own_certificate_expires(
    cluster: Cluster,
) -> None:
    a = cluster.start(A)
    assert a.health() == gen.Health(True, [])
    options = cluster.node_options(B)
    options.cert_manager = gen.create_cert_auth_manager(
        cluster.ca.issue(B, hosts=("127.0.0.1",), valid_for=timedelta(hours=1))
    )
    options.cert_expiry_margin = timedelta(days=7)
    b = cluster.start(B, options)
    h = b.health()
    assert not h.ready and any("expires within" in r for r in h.reasons)


def test_expiring_certificates_are_announced_at_the_margin_then_at_one_hour(
    cluster: Cluster,
) -> None:
    options = cluster.node_options(A)
    options.cert_manager = gen.create_cert_auth_manager(
        cluster.ca.issue(A, hosts=("127.0.0.1",), valid_for=timedelta(hours=2))
    )
    options.cert_check_interval = 0.0  # checked by hand here
    a = cluster.start(A, options)
    observer = a._core.observer  # type: ignore[attr-defined]
    out: queue.Queue[Any] = queue.Queue()
    a.subscribe(a.spawn(Recorder, out), gen.EventCertExpiring)
    first = observer.check_expiry()
    assert [e.node for e in first] == [A]
    assert observer.check_expiry() == []  # announced once per threshold
    later = observer.check_expiry(first[0].not_after - timedelta(minutes=30))
    assert [e.node for e in later] == [A]
    assert events(out, gen.EventCertExpiring).node == A


def test_metrics_over_https_follow_updates_handshakes_and_traffic(cluster: Cluster) -> None:
    options = cluster.node_options(B)
    options.metrics = gen.MetricsOptions(host="127.0.0.1", port=0)
    b = cluster.start(B, options)
    b.spawn_register("pong", Echo)
    cm = b.cert_manager()
    assert cm is not None
    text = scrape(cluster, b)
    before = value(
        text,
        "ergo_cert_expiry_seconds",
        manager="node",
        fingerprint=cm.get_certificate().fingerprint,
    )
    assert before is not None and before > 0
    assert value(text, "ergo_cert_updates_total", result="ok") == 0
    cm.update(cluster.ca.issue(B, hosts=("127.0.0.1",), valid_for=timedelta(days=2)))
    text = scrape(cluster, b)
    assert value(text, "ergo_cert_updates_total", result="ok") == 1
    after = value(
        text,
        "ergo_cert_expiry_seconds",
        manager="node",
        fingerprint=cm.get_certificate().fingerprint,
    )
    assert after is not None and after < before

    # A dialer from an unknown CA: counted as a failed handshake, with its reason.
    stranger_ca = lib.CertificateAuthority.create("stranger CA")
    s_opts = cluster.node_options("s@127.0.0.1")
    s_cm = gen.create_cert_auth_manager(stranger_ca.issue("s@127.0.0.1", hosts=("127.0.0.1",)))
    s_cm.set_root_cas(cluster.ca.pool())
    s_opts.cert_manager = s_cm
    s = cluster.start("s@127.0.0.1", s_opts)
    with pytest.raises(gen.ErrNoConnection):
        s.call(gen.ProcessID("pong", B), 1, timeout=10)

    a = cluster.start(A)
    for i in range(5):
        assert a.call(gen.ProcessID("pong", B), i, timeout=10) == i
    text = scrape(cluster, b)
    assert value(text, "ergo_handshakes_total", side="acceptor", result="ok") == 1
    failed = value(
        text, "ergo_handshakes_total", side="acceptor", result="failed", reason="tls: certificate"
    )
    assert failed is not None and failed >= 1, text
    assert value(text, "ergo_connections", peer=A, cert_version="2") == 1
    msgs_in = value(text, "ergo_messages_total", direction="in")
    assert msgs_in is not None and msgs_in >= 5
    bytes_out = value(text, "ergo_bytes_total", direction="out")
    assert bytes_out is not None and bytes_out > 0
    assert value(text, "ergo_pending_calls") == 0
    count = value(text, "ergo_handshake_duration_seconds_count")
    assert count is not None and count >= 2

    ctx = client_ctx(cluster)
    base = f"https://127.0.0.1:{b.metrics_port()}"  # type: ignore[attr-defined]
    assert httpx.get(base + "/healthz", verify=ctx).status_code == 200
    ready = httpx.get(base + "/readyz", verify=ctx)
    # The certificate it was given above is valid for 2 days: within the 7-day margin.
    assert ready.status_code == 503 and not ready.json()["ready"]
    assert "expires within" in ready.json()["reasons"][0]


def test_two_nodes_in_one_process_have_their_own_registries(cluster: Cluster) -> None:
    names = (A, B)
    nodes = []
    for n in names:
        options = cluster.node_options(n)
        options.metrics = gen.MetricsOptions(port=0)
        nodes.append(cluster.start(n, options))
    nodes[0].cert_manager().update(cluster.ca.issue(A, hosts=("127.0.0.1",)))  # type: ignore[union-attr]
    assert value(scrape(cluster, nodes[0]), "ergo_cert_updates_total", result="ok") == 1
    assert value(scrape(cluster, nodes[1]), "ergo_cert_updates_total", result="ok") == 0
