"""Shared helpers for the certificate tests: CAs, odd certificates, a TLS echo server."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ergo_py import gen
from ergo_py.gen.certmanager import CertState
from ergo_py.lib import CertificateAuthority
from ergo_py.net.tls import ListenerTLS, client_context_for_dial, connection_tls_info

TIMEOUT = 5.0
HOST = "127.0.0.1"


def node_cert(ca: CertificateAuthority, name: str = "a@localhost") -> gen.Certificate:
    return ca.issue(name, hosts=(HOST,))


def expired_cert(ca: CertificateAuthority) -> gen.Certificate:
    start = datetime.now(UTC) - timedelta(hours=2)
    return ca.issue("old@localhost", valid_for=timedelta(hours=1), not_before=start)


def future_cert(ca: CertificateAuthority) -> gen.Certificate:
    start = datetime.now(UTC) + timedelta(hours=1)
    return ca.issue("future@localhost", valid_for=timedelta(hours=1), not_before=start)


def weak_rsa_cert() -> gen.Certificate:
    """A well-formed certificate OpenSSL refuses to load (RSA-1024 is below its security level)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return gen.Certificate((cert,), key)


def ergo_style_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A SEC1 EC key in ``RSA PRIVATE KEY`` armour, as Ergo's generator writes it."""
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    body = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *lines, "-----END RSA PRIVATE KEY-----"])
    return (body + "\n").encode()


def mtls_pair(
    ca: CertificateAuthority,
) -> tuple[gen.CertAuthManager, gen.CertAuthManager]:
    """A server and a client manager trusting ``ca``; the server requires client certs."""
    server = gen.create_cert_auth_manager(node_cert(ca, "server@localhost"))
    client = gen.create_cert_auth_manager(node_cert(ca, "client@localhost"))
    server.set_client_cas(ca.pool())
    server.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    client.set_root_cas(ca.pool())
    return server, client


@dataclass
class Served:
    """What the server side saw on one connection."""

    state: CertState | None
    peer_der: bytes | None
    error: BaseException | None = None


class EchoServer:
    """A blocking TLS echo server on loopback; one thread per connection.

    Use as a context manager; closing stops and joins every thread.
    """

    def __init__(self, listener: ListenerTLS) -> None:
        self.listener = listener
        self._sock = socket.create_server((HOST, 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.served: list[Served] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(TIMEOUT)
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            with self._lock:
                self._threads.append(t)
                self._conns.append(raw)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.listener.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            with self._lock:
                self.served.append(Served(None, None, exc))
            raw.close()
            return
        state, der = connection_tls_info(conn)
        with self._lock:
            self.served.append(Served(state, der))
        try:
            while data := conn.recv(1024):
                conn.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def successes(self) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.error is None]

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._accept_thread.join(TIMEOUT)
        with self._lock:
            threads, conns = list(self._threads), list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(TIMEOUT)


class Refused(Exception):
    """The connection did not carry data (TLS refused it, possibly only at first read)."""


def echo(conn: ssl.SSLSocket, payload: bytes = b"ping") -> None:
    """Send and read back ``payload``; Refused if the peer ended or failed the connection."""
    try:
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(len(payload) - len(got))
            if not chunk:
                raise Refused("connection closed by peer")
            got += chunk
    except (OSError, ssl.SSLError) as exc:
        raise Refused(str(exc)) from exc
    if got != payload:
        raise Refused(f"echo mismatch: {got!r}")


def connect(ctx: ssl.SSLContext, port: int, server_hostname: str | None = None) -> ssl.SSLSocket:
    """Connect, handshake and exchange one message (TLS 1.3 reports client-cert refusal late)."""
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
    try:
        conn = ctx.wrap_socket(raw, server_hostname=server_hostname)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise Refused(str(exc)) from exc
    try:
        echo(conn)
    except Refused:
        conn.close()
        raise
    return conn


def dial(manager: gen.CertManager, port: int, insecure: bool = False) -> ssl.SSLSocket:
    ctx, name = client_context_for_dial(manager, insecure)
    return connect(ctx, port, name)


def peer_fingerprint(conn: ssl.SSLSocket) -> str:
    der = conn.getpeercert(binary_form=True)
    assert der is not None
    return gen.PeerCertificate.from_der(der).fingerprint


def certless_client_context(ca: CertificateAuthority) -> ssl.SSLContext:
    """A verifying client context that presents no certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca.pool().to_pem())
    return ctx


def tls12_client_context(cert: gen.Certificate, ca: CertificateAuthority) -> ssl.SSLContext:
    """A client context capped at TLS 1.2 presenting ``cert`` (key loaded via memfd)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca.pool().to_pem())
    chain, key = cert.to_pem()
    fd = os.memfd_create("test-cert", os.MFD_CLOEXEC)
    try:
        os.write(fd, chain + key)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx
