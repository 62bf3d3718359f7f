"""Meta-processes: the node additions and the TLS TCP server and connection."""

from __future__ import annotations

import hashlib
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from certfixtures import HOST, Refused, connect, dial, echo, mtls_pair, node_cert, peer_fingerprint
from conftest import disabled_options, get, unique_node_name, wait_threads_gone

import ergo_py
from ergo_py import act, gen, meta
from ergo_py.lib import CertificateAuthority


class TCPEcho(act.Actor):
    """A pool process: writes back what it reads; reports every message on ``out``."""

    def init(self, out: queue.Queue[Any], gate: threading.Event | None = None) -> None:
        self.out = out
        self.gate = gate

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        self.out.put(message)
        if isinstance(message, meta.MessageTCP):
            self.send(message.id, meta.MessageTCP(message.id, message.data))


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("meta test CA")


@pytest.fixture
def tls_node(
    ca: CertificateAuthority,
) -> Iterator[tuple[gen.Node, gen.CertAuthManager, gen.CertAuthManager]]:
    """A node (network off) whose cert manager requires client certs, and a client manager."""
    before = set(threading.enumerate())
    server_cm, client_cm = mtls_pair(ca)
    options = disabled_options()
    options.cert_manager = server_cm
    node = ergo_py.start_node(unique_node_name("meta"), options)
    try:
        yield node, server_cm, client_cm
    finally:
        node.stop()
    assert wait_threads_gone(before) == []


def echo_server(
    node: gen.Node, out: queue.Queue[Any], **kw: Any
) -> tuple[meta.TCPServer, gen.Alias]:
    pid = node.spawn(TCPEcho, out)
    server = meta.TCPServer(meta.TCPServerOptions(host=HOST, port=0, process_pool=[pid], **kw))
    return server, node.spawn_meta(server)


def refused_port(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
    except OSError:
        return True
    return False


def test_spawn_meta_returns_the_alias_once_serving_and_send_exit_meta_closes_the_listener(tls_node):
    node, _, client = tls_node
    out: queue.Queue[Any] = queue.Queue()
    server, alias = echo_server(node, out)
    assert isinstance(alias, gen.Alias) and server.port > 0
    assert node.cert_manager() is tls_node[1]
    conn = dial(client, server.port)
    node.send_exit_meta(alias)
    assert refused_port(server.port)
    with pytest.raises(Refused):  # its connections are closed too
        echo(conn)
    conn.close()
    with pytest.raises(gen.ErrProcessUnknown):
        node.send_exit_meta(alias)


def test_an_empty_pool_is_an_error():
    with pytest.raises(gen.ErrIncorrect):
        meta.TCPServer(meta.TCPServerOptions(process_pool=[]))


def test_tls_without_a_cert_manager_is_an_error(node):
    server = meta.TCPServer(meta.TCPServerOptions(host=HOST, process_pool=["nobody"]))
    with pytest.raises(gen.NodeError):
        node.spawn_meta(server)


def test_a_pool_process_sees_connect_data_and_disconnect_with_the_peer_certificate(tls_node):
    node, _, client = tls_node
    out: queue.Queue[Any] = queue.Queue()
    server, _ = echo_server(node, out)
    conn = dial(client, server.port)  # sends and reads back b"ping"
    up = get(out)
    assert isinstance(up, meta.MessageTCPConnect)
    assert up.peer_cert is not None
    assert hashlib.sha256(up.peer_cert).hexdigest() == client.get_certificate().fingerprint
    assert up.remote_addr.startswith(HOST + ":") and up.local_addr == f"{HOST}:{server.port}"
    assert get(out) == meta.MessageTCP(up.id, b"ping")
    conn.close()
    down = get(out)
    assert isinstance(down, meta.MessageTCPDisconnect) and down.id == up.id


def test_connections_go_round_robin_over_the_pool(tls_node):
    node, _, client = tls_node
    outs = [queue.Queue[Any]() for _ in range(2)]
    pids = [node.spawn(TCPEcho, q) for q in outs]
    server = meta.TCPServer(meta.TCPServerOptions(host=HOST, port=0, process_pool=pids))
    node.spawn_meta(server)
    conns = [dial(client, server.port) for _ in range(4)]
    for q in outs:
        ups = [m for m in (get(q) for _ in range(4)) if isinstance(m, meta.MessageTCPConnect)]
        assert len(ups) == 2
    for c in conns:
        c.close()


def test_a_new_connection_sees_the_rotated_certificate_and_an_open_one_keeps_working(tls_node, ca):
    node, server_cm, client = tls_node
    server, _ = echo_server(node, queue.Queue())
    old = dial(client, server.port)
    first = peer_fingerprint(old)
    fresh = node_cert(ca, "server@localhost")
    server_cm.update(fresh)
    new = dial(client, server.port)
    assert peer_fingerprint(new) == fresh.fingerprint != first
    for _ in range(3):  # the kept-alive stream, through the pool actor, mid-rotation
        echo(old, b"x" * 10000)
    old.close()
    new.close()


def test_client_auth_refuses_a_client_without_a_certificate_until_its_ca_is_trusted(tls_node):
    node, server_cm, _ = tls_node
    server, _ = echo_server(node, queue.Queue())
    other_ca = CertificateAuthority.create("another CA")
    anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anon.check_hostname = False
    anon.verify_mode = ssl.CERT_NONE
    with pytest.raises(Refused):
        connect(anon, server.port)
    newcomer = gen.create_cert_auth_manager(node_cert(other_ca, "new@localhost"))
    newcomer.set_root_cas(CertificateAuthority.create("unused").pool())
    with pytest.raises(Refused):
        dial(newcomer, server.port, insecure=True)
    pool = gen.CertPool()
    for c in [*server_cm.client_cas().certificates, *other_ca.pool().certificates]:
        pool.add(c)
    server_cm.set_client_cas(pool)
    dial(newcomer, server.port, insecure=True).close()


def test_a_plaintext_client_on_the_tls_port_is_refused_and_the_server_keeps_serving(tls_node):
    node, _, client = tls_node
    server, _ = echo_server(node, queue.Queue())
    raw = socket.create_connection((HOST, server.port), timeout=5)
    raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
    raw.settimeout(5)
    try:
        while raw.recv(4096):
            pass
    except OSError:
        pass
    raw.close()
    dial(client, server.port).close()


def test_plain_tcp_only_when_asked(node):
    out: queue.Queue[Any] = queue.Queue()
    server, _ = echo_server(node, out, tls=False)
    s = socket.create_connection((HOST, server.port), timeout=5)
    s.sendall(b"hello")
    assert s.recv(5) == b"hello"
    assert get(out).peer_cert is None
    s.close()


def test_a_slow_pool_process_pauses_reading_instead_of_buffering(node):
    out: queue.Queue[Any] = queue.Queue()
    gate = threading.Event()
    pid = node.spawn(TCPEcho, out, gate)
    opts = meta.TCPServerOptions(
        host=HOST, port=0, process_pool=[pid], tls=False, buffer_size=4096, max_queued=8
    )
    server = meta.TCPServer(opts)
    node.spawn_meta(server)
    s = socket.create_connection((HOST, server.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sent = 0
    s.settimeout(1.0)
    chunk = b"z" * 65536
    try:
        while sent < 256 * 1024 * 1024:
            sent += s.send(chunk)
    except TimeoutError:
        pass
    queued = node._core.queued(pid)  # type: ignore[attr-defined]
    assert sent < 64 * 1024 * 1024, "the server read without bound"
    assert queued <= 8 + 64, queued  # max_queued, plus what one read splits into
    gate.set()
    s.close()


def test_a_tcp_connection_presents_the_node_certificate_and_carries_data(tls_node, ca):
    node, server_cm, _ = tls_node
    server_cm.set_root_cas(ca.pool())
    server_out: queue.Queue[Any] = queue.Queue()
    server, _ = echo_server(node, server_out)
    client_out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(TCPEcho, client_out)
    # the node dials itself: its own certificate as the client's, its root CAs
    conn = meta.TCPConnection(
        meta.TCPConnectionOptions(host=HOST, port=server.port, process=pid, server_name=HOST)
    )
    alias = node.spawn_meta(conn)
    up = get(client_out)
    assert isinstance(up, meta.MessageTCPConnect) and up.id == alias
    assert hashlib.sha256(up.peer_cert).hexdigest() == server_cm.get_certificate().fingerprint
    seen = get(server_out)
    assert hashlib.sha256(seen.peer_cert).hexdigest() == server_cm.get_certificate().fingerprint
    node.send(alias, meta.MessageTCP(alias, b"hello"))
    assert get(server_out).data == b"hello"
    # the echo of the server comes back to the client process, which echoes it again
    assert get(client_out) == meta.MessageTCP(alias, b"hello")
    node.send_exit_meta(alias)
    assert isinstance(get(server_out), meta.MessageTCP | meta.MessageTCPDisconnect)


def test_a_tcp_connection_refuses_a_server_certificate_for_another_name(tls_node, ca):
    node, server_cm, _ = tls_node
    server_cm.set_root_cas(ca.pool())
    server, _ = echo_server(node, queue.Queue())
    pid = node.spawn(TCPEcho, queue.Queue())
    conn = meta.TCPConnection(
        meta.TCPConnectionOptions(
            host=HOST, port=server.port, process=pid, server_name="example.org"
        )
    )
    with pytest.raises(gen.ErrNoConnection):
        node.spawn_meta(conn)


def test_a_tcp_connection_ends_when_the_server_closes_it(tls_node, ca):
    node, server_cm, _ = tls_node
    server_cm.set_root_cas(ca.pool())
    server, server_alias = echo_server(node, queue.Queue())
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(TCPEcho, out)
    alias = node.spawn_meta(
        meta.TCPConnection(meta.TCPConnectionOptions(host=HOST, port=server.port, process=pid))
    )
    assert isinstance(get(out), meta.MessageTCPConnect)
    node.send_exit_meta(server_alias)
    assert isinstance(get(out), meta.MessageTCPDisconnect)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            node.send(alias, "still there?")
        except gen.ErrProcessUnknown:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the connection's meta-process did not end")
