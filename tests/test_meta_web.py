"""meta.WebServer and meta.WebHandler with real clients (httpx, and raw sockets)."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from certfixtures import HOST, node_cert
from conftest import disabled_options, unique_node_name, wait_threads_gone
from cryptography.hazmat.primitives.serialization import Encoding

import ergo_py
from ergo_py import act, gen, meta
from ergo_py.lib import CertificateAuthority


async def info_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with what the scope says about the connection, or 'big' for an echo of the body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    tls = scope["extensions"].get("tls") or {}
    out = json.dumps(
        {
            "client_port": scope["client"][1],
            "tls_version": tls.get("tls_version"),
            "chain": tls.get("client_cert_chain"),
            "size": len(body),
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("web test CA")


@pytest.fixture
def web_node(ca: CertificateAuthority) -> Iterator[tuple[gen.Node, gen.CertAuthManager]]:
    before = set(threading.enumerate())
    cm = gen.create_cert_auth_manager(node_cert(ca, "web@localhost"))
    options = disabled_options()
    options.cert_manager = cm
    node = ergo_py.start_node(unique_node_name("web"), options)
    try:
        yield node, cm
    finally:
        node.stop()
    assert wait_threads_gone(before) == []


def client_context(
    ca: CertificateAuthority, tmp: Path, cert: gen.Certificate | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.pool().to_pem())
    if cert is not None:
        cert_pem, key_pem = cert.to_pem()
        (tmp / "c.pem").write_bytes(cert_pem)
        (tmp / "k.pem").write_bytes(key_pem)
        ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    return ctx


def serve(node: gen.Node, app: Any = info_app, **kw: Any) -> meta.WebServer:
    web = meta.WebServer(meta.WebServerOptions(host=HOST, port=0, app=app, **kw))
    node.spawn_meta(web)
    return web


def server_fingerprint(response: httpx.Response) -> str:
    sslobj = response.extensions["network_stream"].get_extra_info("ssl_object")
    return hashlib.sha256(sslobj.getpeercert(True)).hexdigest()


def test_a_new_connection_sees_the_rotated_certificate_and_a_kept_alive_one_keeps_working(
    web_node, ca, tmp_path
):
    node, cm = web_node
    web = serve(node)
    url = f"https://{HOST}:{web.port}/"
    first = cm.get_certificate().fingerprint
    with httpx.Client(verify=client_context(ca, tmp_path)) as kept:
        r1 = kept.get(url)
        assert r1.status_code == 200 and server_fingerprint(r1) == first
        assert r1.json()["tls_version"] == 0x0304
        fresh = node_cert(ca, "web@localhost")
        cm.update(fresh)
        with httpx.Client(verify=client_context(ca, tmp_path)) as new:
            r = new.get(url)
            assert server_fingerprint(r) == fresh.fingerprint != first
        r2 = kept.get(url)
        assert r2.status_code == 200
        assert r2.json()["client_port"] == r1.json()["client_port"]  # the same connection
        assert server_fingerprint(r2) == first


def test_client_auth_refuses_a_client_without_a_certificate_then_admits_a_new_ca_at_runtime(
    web_node, ca, tmp_path
):
    node, cm = web_node
    cm.set_client_cas(ca.pool())
    cm.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    web = serve(node)
    url = f"https://{HOST}:{web.port}/"
    with (
        pytest.raises(httpx.TransportError),
        httpx.Client(verify=client_context(ca, tmp_path)) as c,
    ):
        c.get(url)
    other = CertificateAuthority.create("partner CA")
    partner = other.issue("partner@localhost")
    with (
        pytest.raises(httpx.TransportError),
        httpx.Client(verify=client_context(ca, tmp_path, partner)) as c,
    ):
        c.get(url)
    pool = gen.CertPool()
    for c_ in [*ca.pool().certificates, *other.pool().certificates]:
        pool.add(c_)
    cm.set_client_cas(pool)
    with httpx.Client(verify=client_context(ca, tmp_path, partner)) as c:
        got = c.get(url).json()
    assert ssl.PEM_cert_to_DER_cert(got["chain"][0]) == partner.leaf.public_bytes(Encoding.DER)


def test_a_body_over_the_limit_is_a_413(web_node, ca, tmp_path):
    node, _ = web_node
    web = serve(node, max_body_size=1000)
    url = f"https://{HOST}:{web.port}/"
    with httpx.Client(verify=client_context(ca, tmp_path)) as c:
        assert c.post(url, content=b"x" * 1000).json()["size"] == 1000
        assert c.post(url, content=b"x" * 1001).status_code == 413
        chunks = iter([b"x" * 600, b"x" * 600])  # no content-length: counted as it comes
        assert c.post(url, content=chunks).status_code == 413


def test_a_stalled_client_is_disconnected(web_node, ca, tmp_path):
    node, _ = web_node
    web = serve(node, read_timeout=0.5)
    raw = socket.create_connection((HOST, web.port), timeout=5)
    conn = client_context(ca, tmp_path).wrap_socket(raw, server_hostname=HOST)
    conn.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
    started = time.monotonic()
    while conn.recv(4096):  # until the server closes it (a TimeoutError fails the test)
        pass
    assert time.monotonic() - started < 4
    conn.close()


def test_a_plaintext_client_on_the_tls_port_is_refused_and_the_server_keeps_serving(
    web_node, ca, tmp_path
):
    node, _ = web_node
    web = serve(node)
    with pytest.raises(httpx.TransportError), httpx.Client() as c:
        c.get(f"http://{HOST}:{web.port}/")
    with httpx.Client(verify=client_context(ca, tmp_path)) as c:
        assert c.get(f"https://{HOST}:{web.port}/").status_code == 200


def test_plain_http_only_when_asked(node):
    web = serve(node, tls=False)
    with httpx.Client() as c:
        got = c.get(f"http://{HOST}:{web.port}/").json()
    assert got["tls_version"] is None


def test_tls_without_a_cert_manager_is_an_error(node):
    with pytest.raises(gen.NodeError):
        serve(node)


class Worker(act.Actor):
    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        assert isinstance(request, meta.WebRequest)
        if request.path == "/slow":
            time.sleep(1.0)
        if request.path == "/crash":
            raise RuntimeError("worker crash")
        body = f"{request.method} {request.path}?{request.query} {len(request.body)}".encode()
        cert = b"cert" if request.client_cert else b"anon"
        return meta.WebResponse(201, (("x-who", cert.decode()),), body)


def test_web_handler_hands_requests_to_an_actor_and_maps_timeout_and_crash(web_node, ca, tmp_path):
    node, _ = web_node
    handler = meta.WebHandler(meta.WebHandlerOptions(node.spawn(Worker), request_timeout=0.3))
    web = serve(node, app=handler)
    base = f"https://{HOST}:{web.port}"
    with httpx.Client(verify=client_context(ca, tmp_path, node_cert(ca, "c@localhost"))) as c:
        r = c.post(f"{base}/hello?a=1", content=b"abc")
        assert (r.status_code, r.text, r.headers["x-who"]) == (201, "POST /hello?a=1 3", "anon")
        assert c.get(f"{base}/slow").status_code == 504
        time.sleep(1.0)  # the worker is still on /slow
        assert c.get(f"{base}/crash").status_code == 500
        assert c.get(f"{base}/").status_code == 500  # it is gone


def test_web_handler_passes_the_client_certificate(web_node, ca, tmp_path):
    node, cm = web_node
    cm.set_client_cas(ca.pool())
    cm.set_client_auth(gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN)
    handler = meta.WebHandler(meta.WebHandlerOptions(node.spawn(Worker)))
    web = serve(node, app=handler)
    with httpx.Client(verify=client_context(ca, tmp_path, node_cert(ca, "c@localhost"))) as c:
        assert c.get(f"https://{HOST}:{web.port}/").headers["x-who"] == "cert"
