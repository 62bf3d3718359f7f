"""TLS on loopback: rotation, CA pool and client-auth changes apply at the next handshake."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator

import pytest
from certfixtures import (
    EchoServer,
    Refused,
    certless_client_context,
    connect,
    dial,
    echo,
    mtls_pair,
    node_cert,
    peer_fingerprint,
    tls12_client_context,
)

from ergo_py import gen
from ergo_py.lib import CertificateAuthority
from ergo_py.net.tls import ListenerTLS, client_context_for_dial, connection_tls_info


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("tls test CA")


@pytest.fixture(scope="module")
def ca2() -> CertificateAuthority:
    return CertificateAuthority.create("tls test CA 2")


@pytest.fixture
def managers(ca: CertificateAuthority) -> tuple[gen.CertAuthManager, gen.CertAuthManager]:
    return mtls_pair(ca)


@pytest.fixture
def server(
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
) -> Iterator[EchoServer]:
    listener = ListenerTLS(managers[0])
    with EchoServer(listener) as srv:
        yield srv
    listener.close()


def test_rotation_new_connection_sees_new_cert_old_keeps_old(
    ca: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    srv_mgr, cli_mgr = managers
    old_fp = srv_mgr.get_certificate().fingerprint
    first = dial(cli_mgr, server.port)
    assert peer_fingerprint(first) == old_fp

    srv_mgr.update(node_cert(ca, "server@localhost"))
    new_fp = srv_mgr.get_certificate().fingerprint
    assert new_fp != old_fp
    second = dial(cli_mgr, server.port)
    assert peer_fingerprint(second) == new_fp

    echo(first, b"still alive")  # the old connection still carries data
    assert peer_fingerprint(first) == old_fp
    versions = [s.state.version for s in server.successes() if s.state is not None]
    assert versions == [1, 2]
    first.close()
    second.close()


def test_client_rotation_is_seen_by_the_server(
    ca: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    _, cli_mgr = managers
    first = dial(cli_mgr, server.port)
    cli_mgr.update(node_cert(ca, "client@localhost"))
    second = dial(cli_mgr, server.port)
    seen = [gen.PeerCertificate.from_der(s.peer_der or b"") for s in server.successes()]
    assert seen[1].fingerprint == cli_mgr.get_certificate().fingerprint
    assert seen[0].fingerprint != seen[1].fingerprint
    assert seen[1].node_names == ("client@localhost",)
    first.close()
    second.close()


def test_connection_tls_info_reports_the_state_used_on_both_sides(
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    srv_mgr, cli_mgr = managers
    conn = dial(cli_mgr, server.port)
    state, der = connection_tls_info(conn)
    assert state is cli_mgr.state()
    assert der is not None
    assert gen.PeerCertificate.from_der(der).fingerprint == srv_mgr.get_certificate().fingerprint
    served = server.successes()[0]
    assert served.state is srv_mgr.state()
    conn.close()


def test_client_from_unknown_ca_refused_until_client_cas_include_it(
    ca: CertificateAuthority,
    ca2: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    srv_mgr, _ = managers
    stranger = gen.create_cert_auth_manager(node_cert(ca2, "stranger@localhost"))
    stranger.set_root_cas(ca.pool())
    with pytest.raises(Refused):
        dial(stranger, server.port)
    both = ca.pool()
    both.add(ca2.certificate)
    srv_mgr.set_client_cas(both)
    dial(stranger, server.port).close()


def test_narrowing_client_cas_refuses_the_next_handshake(
    ca: CertificateAuthority,
    ca2: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    srv_mgr, cli_mgr = managers
    up = dial(cli_mgr, server.port)
    # Narrowed together with a certificate from the new CA (alone, the pool
    # would strand the server's own certificate: see test_trust_validation).
    srv_mgr.update_all(node_cert(ca2, "server@localhost"), client_cas=ca2.pool())
    with pytest.raises(Refused):
        dial(cli_mgr, server.port)
    echo(up)  # established connections keep what they were made with
    up.close()


def test_certless_client_accepted_if_given_then_refused_when_required(
    ca: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    srv_mgr, _ = managers
    srv_mgr.set_client_auth(gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN)
    certless = certless_client_context(ca)
    conn = connect(certless, server.port)
    assert server.successes()[-1].peer_der is None
    srv_mgr.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    with pytest.raises(Refused):  # under TLS 1.3 only the first read fails
        connect(certless, server.port)
    echo(conn)
    conn.close()


def test_loosening_to_no_client_cert_stops_asking(
    ca: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    srv_mgr, cli_mgr = managers
    with pytest.raises(Refused):
        connect(certless_client_context(ca), server.port)
    srv_mgr.set_client_auth(gen.ClientAuth.NO_CLIENT_CERT)
    connect(certless_client_context(ca), server.port).close()
    dial(cli_mgr, server.port).close()
    assert server.successes()[-1].peer_der is None  # not requested, so not sent


def test_root_ca_change_applies_to_the_next_dial(
    ca: CertificateAuthority,
    ca2: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    # A manager that never trusted ca (the system store): moving its roots
    # away from the CA of its own certificate would be refused (a trust
    # change that strands it; see test_trust_validation).
    cli_mgr = gen.create_cert_auth_manager(node_cert(ca, "client@localhost"))
    cli_mgr.set_root_cas(ca2.pool())
    with pytest.raises(Refused):
        dial(cli_mgr, server.port)
    cli_mgr.set_root_cas(ca.pool())
    dial(cli_mgr, server.port).close()


def test_insecure_skip_verify_accepts_an_untrusted_server(
    ca: CertificateAuthority,
    ca2: CertificateAuthority,
    server: EchoServer,
) -> None:
    cli_mgr = gen.create_cert_auth_manager(node_cert(ca, "client@localhost"))
    cli_mgr.set_root_cas(ca2.pool())
    with pytest.raises(Refused):
        dial(cli_mgr, server.port)
    conn = dial(cli_mgr, server.port, insecure=True)
    assert conn.getpeercert(binary_form=True)  # the DER is still there for binding
    conn.close()


def test_server_name_is_checked_when_set(
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    _, cli_mgr = managers
    cli_mgr.set_server_name("wrong.example")
    _, name = client_context_for_dial(cli_mgr, False)
    assert name == "wrong.example"
    with pytest.raises(Refused):
        dial(cli_mgr, server.port)
    cli_mgr.set_server_name("localhost")
    dial(cli_mgr, server.port).close()
    cli_mgr.set_server_name("")
    assert client_context_for_dial(cli_mgr, False)[1] is None


def test_listener_follows_client_auth_until_closed(
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
) -> None:
    srv_mgr, _ = managers
    listener = ListenerTLS(srv_mgr)
    mode: ssl.VerifyMode = listener.context.verify_mode
    assert mode == ssl.CERT_REQUIRED
    srv_mgr.set_client_auth(gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN)
    assert listener.context.verify_mode == ssl.CERT_OPTIONAL
    listener.close()
    srv_mgr.set_client_auth(gen.ClientAuth.NO_CLIENT_CERT)
    assert listener.context.verify_mode == ssl.CERT_OPTIONAL


def test_plain_cert_manager_serves_tls(ca: CertificateAuthority) -> None:
    plain = gen.create_cert_manager(node_cert(ca, "plain@localhost"))
    client = gen.create_cert_auth_manager(node_cert(ca, "c@localhost"))
    client.set_root_cas(ca.pool())
    listener = ListenerTLS(plain)
    with EchoServer(listener) as srv:
        conn = dial(client, srv.port)
        assert peer_fingerprint(conn) == plain.get_certificate().fingerprint
        conn.close()
        assert srv.successes()[0].peer_der is None
    listener.close()


def test_tls12_is_not_served_so_session_ids_cannot_bypass_a_change(
    ca: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    """TLS 1.2 resumes by session ID from the listener's cache, across any change."""
    if not hasattr(os, "memfd_create"):
        pytest.skip("needs memfd")
    _, cli_mgr = managers
    with pytest.raises(Refused):
        connect(tls12_client_context(cli_mgr.get_certificate(), ca), server.port)


def test_a_tls13_session_is_never_resumed(
    ca: CertificateAuthority,
    managers: tuple[gen.CertAuthManager, gen.CertAuthManager],
    server: EchoServer,
) -> None:
    _, cli_mgr = managers
    ctx = cli_mgr.client_context()
    first = connect(ctx, server.port)
    assert first.version() == "TLSv1.3"
    session = first.session
    first.close()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5.0)
    second = ctx.wrap_socket(raw, session=session) if session is not None else ctx.wrap_socket(raw)
    echo(second)
    assert not second.session_reused
    second.close()
