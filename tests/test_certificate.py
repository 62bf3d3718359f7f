"""gen.Certificate, gen.CertPool, gen.PeerCertificate, gen.ClientAuth."""

from __future__ import annotations

import hashlib

import pytest
from certfixtures import node_cert
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ergo_py import gen
from ergo_py.gen.cert import parse_node_uri
from ergo_py.lib import CertificateAuthority


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test CA")


def test_fingerprint_is_sha256_of_leaf_der(ca: CertificateAuthority) -> None:
    cert = node_cert(ca)
    der = cert.leaf.public_bytes(serialization.Encoding.DER)
    assert cert.fingerprint == hashlib.sha256(der).hexdigest()


def test_node_names_come_from_ergo_uri_sans(ca: CertificateAuthority) -> None:
    cert = ca.issue("alpha@node1.example", hosts=("127.0.0.1",))
    assert cert.node_names == ("alpha@node1.example",)
    assert "node1.example" in cert.dns_names
    assert cert.ip_addresses == ("127.0.0.1",)


def test_parse_node_uri_rejects_other_uris() -> None:
    assert parse_node_uri("ergo://a@host") == "a@host"
    assert parse_node_uri("ERGO://a@host/") == "a@host"
    assert parse_node_uri("https://a@host") is None
    assert parse_node_uri("ergo://host") is None
    assert parse_node_uri("ergo://@host") is None
    assert parse_node_uri("ergo://a@") is None
    assert parse_node_uri("ergo://a@h/path") is None


def test_certificate_is_immutable(ca: CertificateAuthority) -> None:
    cert = node_cert(ca)
    with pytest.raises(AttributeError):
        cert.__setattr__("_key", None)
    with pytest.raises(AttributeError):
        cert.fingerprint = "x"  # type: ignore[misc]


def test_key_that_does_not_match_is_refused(ca: CertificateAuthority) -> None:
    cert = node_cert(ca)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(gen.CertificateError, match="does not match"):
        gen.Certificate(cert.chain, other)


def test_empty_chain_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(gen.CertificateError):
        gen.Certificate((), node_cert(ca).private_key)


def test_pem_round_trip_keeps_chain_and_key(ca: CertificateAuthority) -> None:
    cert = node_cert(ca)
    cert_pem, key_pem = cert.to_pem()
    assert b"BEGIN PRIVATE KEY" in key_pem
    again = gen.Certificate.from_pem(cert_pem, key_pem)
    assert again == cert
    assert again.fingerprint == cert.fingerprint


def test_from_pem_accepts_an_encrypted_key(ca: CertificateAuthority) -> None:
    cert = node_cert(ca)
    cert_pem, _ = cert.to_pem()
    enc = cert.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    assert gen.Certificate.from_pem(cert_pem, enc, password="s3cret") == cert


def test_from_pem_encrypted_key_without_password_is_a_certificate_error(
    ca: CertificateAuthority,
) -> None:
    cert = node_cert(ca)
    cert_pem, _ = cert.to_pem()
    enc = cert.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    with pytest.raises(gen.CertificateError):
        gen.Certificate.from_pem(cert_pem, enc)
    with pytest.raises(gen.CertificateError):
        gen.Certificate.from_pem(cert_pem, enc, password=b"wrong")


def test_from_pem_garbage_is_a_certificate_error(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = node_cert(ca).to_pem()
    with pytest.raises(gen.CertificateError):
        gen.Certificate.from_pem(b"not a pem", key_pem)
    with pytest.raises(gen.CertificateError):
        gen.Certificate.from_pem(
            cert_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
    with pytest.raises(gen.CertificateError):
        gen.Certificate.from_pem(cert_pem, cert_pem)


def test_certificate_error_is_an_ergo_error() -> None:
    assert issubclass(gen.CertificateError, gen.ErgoError)


def test_peer_certificate_from_der(ca: CertificateAuthority) -> None:
    cert = ca.issue("b@localhost", hosts=("127.0.0.1",))
    peer = gen.PeerCertificate.from_der(cert.leaf.public_bytes(serialization.Encoding.DER))
    assert peer.fingerprint == cert.fingerprint
    assert peer.node_names == ("b@localhost",)
    assert peer.has_node_name("b@localhost")
    assert peer.subject == cert.subject
    assert peer.not_after == cert.not_after
    assert peer.dns_names == ("localhost",)
    assert peer.ip_addresses == ("127.0.0.1",)


def test_peer_certificate_parse_is_remembered_per_certificate(ca: CertificateAuthority) -> None:
    first = ca.issue("b@localhost").leaf.public_bytes(serialization.Encoding.DER)
    rotated = ca.issue("b@localhost").leaf.public_bytes(serialization.Encoding.DER)
    peer = gen.PeerCertificate.from_der(first)
    assert gen.PeerCertificate.from_der(bytearray(first)) is peer
    other = gen.PeerCertificate.from_der(rotated)
    assert other.fingerprint != peer.fingerprint


def test_peer_certificate_garbage_is_a_certificate_error() -> None:
    with pytest.raises(gen.CertificateError):
        gen.PeerCertificate.from_der(b"\x30\x03\x02\x01\x01")
    with pytest.raises(gen.CertificateError):
        gen.PeerCertificate.from_der(b"")


def test_pool_dedupes_and_reports_fingerprints(ca: CertificateAuthority) -> None:
    pool = gen.CertPool()
    pool.add(ca.certificate)
    pool.add(ca.certificate)
    assert len(pool) == 1
    assert ca.certificate in pool
    assert pool.fingerprints == (
        hashlib.sha256(ca.certificate.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def test_pool_from_pem_and_file(ca: CertificateAuthority, tmp_path: object) -> None:
    other = CertificateAuthority.create("other")
    pem = (ca.pool().to_pem() + other.pool().to_pem()).encode()
    pool = gen.CertPool.from_pem(pem)
    assert len(pool) == 2
    from pathlib import Path

    path = Path(str(tmp_path)) / "cas.pem"
    path.write_bytes(pem)
    assert gen.CertPool.from_file(path) == pool


def test_pool_bad_input_is_a_certificate_error(tmp_path: object) -> None:
    with pytest.raises(gen.CertificateError):
        gen.CertPool.from_pem(b"garbage")
    with pytest.raises(gen.CertificateError):
        gen.CertPool.from_file(f"{tmp_path}/missing.pem")
    with pytest.raises(gen.CertificateError):
        gen.CertPool().add("not a certificate")  # type: ignore[arg-type]


def test_frozen_pool_refuses_add(ca: CertificateAuthority) -> None:
    frozen = ca.pool().frozen()
    with pytest.raises(gen.ErrNotAllowed):
        frozen.add(ca.certificate)
    assert not frozen.copy().readonly


def test_client_auth_values_match_go() -> None:
    assert [m.value for m in gen.ClientAuth] == [0, 1, 2, 3, 4]
    assert gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT.name == "REQUIRE_AND_VERIFY_CLIENT_CERT"


def test_copies_of_a_certificate_are_itself(ca: CertificateAuthority) -> None:
    import copy

    cert = node_cert(ca)
    assert copy.copy(cert) is cert
    assert copy.deepcopy(cert) is cert
