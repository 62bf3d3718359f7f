"""lib.generate_self_signed_cert, lib.load_x509_key_pair, lib.CertificateAuthority."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from certfixtures import EchoServer, Refused, connect, ergo_style_key_pem, expired_cert, future_cert
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ergo_py import gen, lib
from ergo_py.lib import CertificateAuthority
from ergo_py.net.tls import ListenerTLS

_E = TypeVar("_E", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("lib test CA")


def _ext(cert: x509.Certificate, cls: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(cls)


def test_self_signed_is_p256_with_both_usages_and_sans() -> None:
    cert = lib.generate_self_signed_cert("acme", "localhost", "127.0.0.1", "::1")
    key = cert.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    eku = _ext(cert.leaf, x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert _ext(cert.leaf, x509.BasicConstraints).critical
    assert _ext(cert.leaf, x509.KeyUsage).critical
    _ext(cert.leaf, x509.SubjectKeyIdentifier)
    assert cert.dns_names == ("localhost",)
    assert cert.ip_addresses == ("127.0.0.1", "::1")
    assert "O=acme" in cert.subject


def test_self_signed_validity_is_backdated_and_one_year() -> None:
    cert = lib.generate_self_signed_cert("acme", "localhost")
    now = datetime.now(UTC)
    assert cert.not_before <= now - timedelta(seconds=30)
    assert timedelta(days=364) < cert.not_after - now <= timedelta(days=365)


def test_self_signed_key_pem_has_the_pkcs8_label() -> None:
    _, key_pem = lib.generate_self_signed_cert("acme", "localhost").to_pem()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_pinned_self_signed_certs_do_mutual_tls() -> None:
    server_cert = lib.generate_self_signed_cert("srv", "127.0.0.1")
    client_cert = lib.generate_self_signed_cert("cli", "127.0.0.1")
    server = gen.create_cert_auth_manager(server_cert)
    server.set_client_cas(gen.CertPool([client_cert.leaf]))
    server.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    client = gen.create_cert_auth_manager(client_cert)
    client.set_root_cas(gen.CertPool([server_cert.leaf]))
    listener = ListenerTLS(server)
    with EchoServer(listener) as srv:
        conn = connect(client.client_context(), srv.port)
        conn.close()
        assert srv.successes()[0].peer_der == client_cert.leaf.public_bytes(
            serialization.Encoding.DER
        )
    listener.close()


def _write_pair(tmp_path: Path, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert_pem)
    k.write_bytes(key_pem)
    return c, k


def test_load_x509_key_pair_round_trip(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert = ca.issue("a@localhost")
    c, k = _write_pair(tmp_path, *cert.to_pem())
    assert lib.load_x509_key_pair(c, k) == cert


def test_load_x509_key_pair_accepts_ergo_mislabelled_ec_key(tmp_path: Path) -> None:
    cert = lib.generate_self_signed_cert("ergo", "localhost")
    assert isinstance(cert.private_key, ec.EllipticCurvePrivateKey)
    key_pem = ergo_style_key_pem(cert.private_key)
    assert key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(key_pem, password=None)
    c, k = _write_pair(tmp_path, cert.to_pem()[0], key_pem)
    loaded = lib.load_x509_key_pair(c, k)
    assert loaded.fingerprint == cert.fingerprint
    gen.create_cert_manager(loaded)  # and OpenSSL can use it


def test_load_x509_key_pair_with_encrypted_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert = ca.issue("a@localhost")
    enc = cert.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"pw"),
    )
    c, k = _write_pair(tmp_path, cert.to_pem()[0], enc)
    assert lib.load_x509_key_pair(c, k, password=b"pw") == cert
    with pytest.raises(gen.CertificateError):
        lib.load_x509_key_pair(c, k)
    with pytest.raises(gen.CertificateError):
        lib.load_x509_key_pair(c, k, password="wrong")


def test_load_x509_key_pair_missing_or_mismatched_files(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    a, b = ca.issue("a@localhost"), ca.issue("b@localhost")
    with pytest.raises(gen.CertificateError):
        lib.load_x509_key_pair(tmp_path / "nope.pem", tmp_path / "nope-key.pem")
    c, k = _write_pair(tmp_path, a.to_pem()[0], b.to_pem()[1])
    with pytest.raises(gen.CertificateError, match="does not match"):
        lib.load_x509_key_pair(c, k)


def test_ca_issues_node_cert_with_uri_and_host_sans(ca: CertificateAuthority) -> None:
    cert = ca.issue("alpha@box.example", hosts=("127.0.0.1", "alt.example"))
    assert cert.node_names == ("alpha@box.example",)
    assert set(cert.dns_names) == {"alt.example", "box.example"}
    assert cert.ip_addresses == ("127.0.0.1",)
    eku = _ext(cert.leaf, x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.leaf.issuer == ca.certificate.subject
    ca.certificate.verify_directly_issued_by(ca.certificate)
    cert.leaf.verify_directly_issued_by(ca.certificate)


def test_ca_issues_short_lived_certs(ca: CertificateAuthority) -> None:
    cert = ca.issue("a@localhost", valid_for=timedelta(seconds=5))
    assert cert.not_after - datetime.now(UTC) <= timedelta(seconds=5)
    assert cert.is_valid_at()


def test_ca_can_issue_expired_and_future_certs(ca: CertificateAuthority) -> None:
    assert expired_cert(ca).not_after < datetime.now(UTC)
    assert future_cert(ca).not_before > datetime.now(UTC)


def test_ca_rejects_bad_node_names_and_validity(ca: CertificateAuthority) -> None:
    for bad in ("nohost", "@host", "name@", "a@b@c"):
        with pytest.raises(gen.ErgoError):
            ca.issue(bad)
    with pytest.raises(gen.ErgoError):
        ca.issue("a@localhost", valid_for=timedelta(0))


def test_ca_pem_round_trip(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.to_pem()
    again = CertificateAuthority.from_pem(cert_pem, key_pem)
    assert again.certificate == ca.certificate
    issued = again.issue("z@localhost")
    issued.leaf.verify_directly_issued_by(ca.certificate)
    assert again.pool() == ca.pool()


def test_ca_from_pem_refuses_a_non_ca(ca: CertificateAuthority) -> None:
    with pytest.raises(gen.CertificateError):
        CertificateAuthority.from_pem(*ca.issue("a@localhost").to_pem())
    with pytest.raises(gen.CertificateError):
        CertificateAuthority.from_pem(b"junk", b"junk")


def test_ca_issued_cert_verifies_in_strict_openssl(ca: CertificateAuthority) -> None:
    """Python 3.13-style strict verification accepts the chain (SKI/AKI, critical constraints)."""
    server = gen.create_cert_auth_manager(ca.issue("s@localhost", hosts=("127.0.0.1",)))
    listener = ListenerTLS(server)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=ca.pool().to_pem())
    with EchoServer(listener) as srv:
        connect(ctx, srv.port, "127.0.0.1").close()
        other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        other.load_verify_locations(cadata=CertificateAuthority.create("x").pool().to_pem())
        with pytest.raises(Refused):
            connect(other, srv.port, "127.0.0.1")
    listener.close()
