"""``ergo-py demo``: live certificate rotation over real mutual TLS.

A listener and a dialer, each with its own ``CertAuthManager`` and a
certificate from one development CA, on loopback. The demo opens a
connection, rotates both certificates, opens another, and shows that the new
connection presents the new certificates while the old one, still open, keeps
working on the old ones. Then it tightens trust: a client with a certificate
from an unknown CA is refused until its CA is added to the pool.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from ergo_py import gen
from ergo_py.lib import CertificateAuthority
from ergo_py.net.tls import ListenerTLS, client_context_for_dial, connection_tls_info

_TIMEOUT = 5.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="live certificate rotation over mutual TLS on loopback")
    p.set_defaults(run=run)


@dataclass
class _Served:
    server_version: int
    client_fingerprint: str


class _EchoServer:
    """A blocking TLS echo server on 127.0.0.1 (one thread per connection)."""

    def __init__(self, listener: ListenerTLS) -> None:
        self._listener = listener
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.seen: list[_Served] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(_TIMEOUT)
        try:
            with self._listener.context.wrap_socket(raw, server_side=True) as conn:
                state, peer_der = connection_tls_info(conn._sslobj)  # type: ignore[attr-defined]
                if state is not None and peer_der is not None:
                    peer = gen.PeerCertificate.from_der(peer_der)
                    self.seen.append(_Served(state.version, peer.fingerprint))
                while data := conn.recv(1024):
                    conn.sendall(data)
        except (OSError, ssl.SSLError):
            pass  # a refused client: the dialer's side reports it

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._accept_thread.join(_TIMEOUT)
        for t in self._threads:
            t.join(_TIMEOUT)


def _dial(manager: gen.CertManager, port: int) -> ssl.SSLSocket:
    ctx, server_hostname = client_context_for_dial(manager, False)
    raw = socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT)
    conn = ctx.wrap_socket(raw, server_hostname=server_hostname)
    conn.sendall(b"ping")  # TLS 1.3 reports a refused client certificate on the first read
    if conn.recv(4) != b"ping":
        raise gen.ErrNoConnection("echo failed")
    return conn


def _short(fp: str) -> str:
    return fp[:16]


def run(args: argparse.Namespace | None = None) -> int:
    """Run the demo; returns 0 when every step behaved as promised."""
    ca = CertificateAuthority.create("ergo_py demo CA")
    server = gen.create_cert_auth_manager(ca.issue("server@localhost", hosts=("127.0.0.1",)))
    client = gen.create_cert_auth_manager(ca.issue("client@localhost", hosts=("127.0.0.1",)))
    for m in (server, client):
        m.set_client_cas(ca.pool())
        m.set_root_cas(ca.pool())
    server.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)

    listener = ListenerTLS(server)
    echo = _EchoServer(listener)
    ok = True
    try:
        print("1. connect with the first certificates")
        first = _dial(client, echo.port)
        peer = gen.PeerCertificate.from_der(first.getpeercert(binary_form=True) or b"")
        print(f"   server presented {_short(peer.fingerprint)} (version {server.version})")

        print("2. rotate both certificates while the connection stays open")
        server.update(ca.issue("server@localhost", hosts=("127.0.0.1",)))
        client.update(ca.issue("client@localhost", hosts=("127.0.0.1",)))
        second = _dial(client, echo.port)
        peer2 = gen.PeerCertificate.from_der(second.getpeercert(binary_form=True) or b"")
        print(f"   new connection: server presented {_short(peer2.fingerprint)}")
        new_fp = server.get_certificate().fingerprint
        ok &= peer2.fingerprint == new_fp and peer.fingerprint != new_fp
        first.sendall(b"ping")
        still = first.recv(4) == b"ping"
        ok &= still
        print(f"   old connection still works on the old certificate: {still}")
        for i, s in enumerate(echo.seen, 1):
            print(
                f"   server side, connection {i}: own cert version {s.server_version}, "
                f"client cert {_short(s.client_fingerprint)}"
            )

        print("3. a client from another CA is refused, then trusted after a pool change")
        other_ca = CertificateAuthority.create("another CA")
        stranger = gen.create_cert_auth_manager(
            other_ca.issue("stranger@localhost", hosts=("127.0.0.1",))
        )
        stranger.set_root_cas(ca.pool())
        try:
            _dial(stranger, echo.port).close()
            refused = False
        except (OSError, ssl.SSLError, gen.ErgoError) as exc:
            refused = True
            print(f"   refused: {type(exc).__name__}")
        ok &= refused
        both = gen.CertPool()
        for c in (*ca.pool().certificates, *other_ca.pool().certificates):
            both.add(c)
        server.set_client_cas(both)
        _dial(stranger, echo.port).close()
        print("   accepted after set_client_cas(old CA + new CA), no restart")
        first.close()
        second.close()
    finally:
        echo.close()
        listener.close()
    print("demo", "passed" if ok else "FAILED")
    return 0 if ok else 1
