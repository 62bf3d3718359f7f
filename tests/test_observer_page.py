"""The observer page (``options.observer``): its JSON, its TLS, and a real headless browser.

The browser test runs Debian's ``chromium`` (``make test`` installs it when
missing; without it the test skips and says so). A browser has no client
certificate, and the cluster's nodes require one, so the observer here gets
a cert manager of its own (``ObserverOptions(cert_manager=...)``, client auth
``NO_CLIENT_CERT``); chromium trusts exactly that certificate's key
(``--ignore-certificate-errors-spki-list``), not every certificate.

"Live, without a reload": the page is rendered once by the server ("rendered
HH:MM:SS") and then redrawn by its own polling of ``/observer.json``
("updated HH:MM:SS"); ``--dump-dom`` after a virtual-time budget of a few
seconds shows the DOM as the polling left it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import eventually, wait_threads_gone
from cryptography.hazmat.primitives import serialization
from test_observe import client_ctx

from ergo_py import gen
from ergo_py.testing import Cluster, Echo

A = "a@127.0.0.1"
B = "b@127.0.0.1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[A, B], start=False) as c:
        yield c
    assert wait_threads_gone(before) == []


def start_pair(cluster: Cluster, own: gen.CertManager | None) -> tuple[gen.Node, gen.Node]:
    """A with the observer (``own``: its own cert manager), B; connected, one message each way."""
    options = cluster.node_options(A)
    options.observer = gen.ObserverOptions(port=0, cert_manager=own)
    a = cluster.start(A, options)
    b = cluster.start(B)
    b.spawn_register("pong", Echo)
    assert a.call(gen.ProcessID("pong", B), "ping") == "ping"
    return a, b


def test_json_and_page_show_node_peers_connection_cert_events_and_processes(
    cluster: Cluster,
) -> None:
    a, _ = start_pair(cluster, None)  # the node's own manager: client certificate required
    base = f"https://127.0.0.1:{a.observer_port()}"  # type: ignore[attr-defined]
    ctx = client_ctx(cluster)
    snap = httpx.get(f"{base}/observer.json", verify=ctx, timeout=10).json()
    assert snap["node"] == A and snap["nodes"] == [A, B]
    assert snap["health"]["ready"] is True
    assert snap["cert"]["version"] == 1 and snap["cert"]["level"] == "ok"
    (conn,) = snap["connections"]
    assert conn["peer"] == B and conn["identity_verified"] is True
    assert conn["local_cert_version"] == 1 and conn["tls_version"].startswith("TLSv1.")
    assert conn["peer_cert_subject"].startswith(f"CN={B}")
    assert conn["messages_in"] >= 1 and conn["messages_out"] >= 1
    assert [e["kind"] for e in snap["events"]] == ["EventConnectionUp"]
    assert snap["processes"] == [] or all("mailbox" in p for p in snap["processes"])
    page = httpx.get(base + "/", verify=ctx, timeout=10)
    assert page.headers["content-type"].startswith("text/html")
    assert f"<td>{B}</td>" in page.text and 'id="cert-version">1<' in page.text
    assert httpx.get(f"{base}/nope", verify=ctx, timeout=10).status_code == 404
    # The node requires client certificates: a browser without one is refused.
    trust_only = ssl.create_default_context(cadata=cluster.ca.pool().to_pem())
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/observer.json", verify=trust_only, timeout=10)


def test_event_ring_keeps_the_last_n(cluster: Cluster) -> None:
    options = cluster.node_options(A)
    options.observer = gen.ObserverOptions(port=0, events=3)
    a = cluster.start(A, options)
    for _ in range(5):
        cluster.rotate(A)
    base = f"https://127.0.0.1:{a.observer_port()}"  # type: ignore[attr-defined]
    snap = httpx.get(f"{base}/observer.json", verify=client_ctx(cluster), timeout=10).json()
    assert [e["kind"] for e in snap["events"]] == ["EventCertUpdated"] * 3
    assert "version=6" in snap["events"][0]["text"]  # newest first


def spki_pin(cert: gen.Certificate) -> str:
    spki = cert.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium(url: str, profile: str, pin: str, *extra: str) -> str:
    assert CHROMIUM is not None
    r = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # we may be root
            "--disable-gpu",
            f"--user-data-dir={profile}",
            f"--ignore-certificate-errors-spki-list={pin}",
            "--window-size=1200,900",
            "--virtual-time-budget=3000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (`make test` installs Debian's chromium when it can)",
)
def test_headless_chromium_sees_the_connection_and_a_rotation(
    cluster: Cluster, tmp_path: Path
) -> None:
    own_cert = cluster.ca.issue("observer@127.0.0.1", hosts=("127.0.0.1",))
    own = gen.create_cert_manager(own_cert)  # NO_CLIENT_CERT: a browser may connect
    a, _ = start_pair(cluster, own)
    url = f"https://127.0.0.1:{a.observer_port()}/"  # type: ignore[attr-defined]
    pin = spki_pin(own_cert)
    with tempfile.TemporaryDirectory() as profile:
        shot = tmp_path / "observer.png"
        chromium(url, profile, pin, f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000

        dom = chromium(url, profile, pin, "--dump-dom")
        assert re.search(r'id="nodes">[^<]*a@127\.0\.0\.1, b@127\.0\.0\.1<', dom), dom[-3000:]
        assert re.search(r'<tr class="conn"><td>b@127\.0\.0\.1</td>', dom)
        assert "updated " in dom  # the script's poll redrew the page
        assert 'id="cert-version">1<' in dom

        cluster.rotate(A, reconnect=True)
        network = a.network()
        eventually(
            lambda: B in network.nodes() and network.info(B)["local_cert_version"] == 2, 10.0
        )
        snap = httpx.get(url + "observer.json", verify=False, timeout=10).json()
        assert snap["cert"]["version"] == 2
        assert [c["local_cert_version"] for c in snap["connections"]] == [2]
        assert "EventCertUpdated" in [e["kind"] for e in snap["events"]]

        dom = chromium(url, profile, pin, "--dump-dom")
        assert 'id="cert-version">2<' in dom and "updated " in dom
        row = re.search(r'<tr class="conn">(.*?)</tr>', dom)
        assert row is not None
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells[0] == B and cells[2] == "yes" and cells[3] == "2", cells
        assert "EventCertUpdated" in dom
        if os.environ.get("ERGO_PY_OBSERVER_SCREENSHOT"):  # docs/observer.png is made so
            out = os.environ["ERGO_PY_OBSERVER_SCREENSHOT"]
            chromium(url, profile, pin, f"--screenshot={os.path.abspath(out)}")
