"""Validated updates: bad material is refused, named and counted; the old stays in force."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from certfixtures import node_cert
from conftest import Recorder, get, wait_threads_gone
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ergo_py import gen
from ergo_py.gen import validate
from ergo_py.gen.certmanager import build_client_context, build_server_context
from ergo_py.lib import CertificateAuthority
from ergo_py.testing import Cluster, Echo

A = "a@127.0.0.1"
B = "b@127.0.0.1"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("validation CA")


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create("another CA")


def mtls_manager(ca: CertificateAuthority, name: str = "a@localhost") -> gen.CertAuthManager:
    cam = gen.create_cert_auth_manager(node_cert(ca, name))
    cam.set_client_cas(ca.pool())
    cam.set_root_cas(ca.pool())
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    return cam


def refused(cam: gen.CertManager, change: Any, check: str) -> gen.CertValidationError:
    """``change()`` is refused by ``check`` and the manager's state is untouched."""
    before = cam.state()
    with pytest.raises(gen.CertValidationError) as info:
        change()
    assert info.value.check == check
    assert info.value.fix  # says what to do
    assert isinstance(info.value, gen.CertificateError)
    assert cam.state() is before
    return info.value


def server_auth_only(ca: CertificateAuthority, name: str) -> gen.Certificate:
    """A node certificate with only the serverAuth usage (what Ergo's generator makes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"ergo://{name}")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca._key, hashes.SHA256())
    )
    return gen.Certificate((cert,), key)


# -- each check, on a bare manager


def test_a_certificate_for_another_node_is_refused(ca: CertificateAuthority) -> None:
    cam = mtls_manager(ca)
    cam.expect_node_name("a@localhost")
    err = refused(cam, lambda: cam.update(node_cert(ca, "b@localhost")), "node_name")
    assert "a@localhost" in str(err)
    cam.update(node_cert(ca, "a@localhost"))  # the right name goes through
    assert cam.version == 2


def test_a_certificate_from_a_ca_outside_the_pool_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    cam = mtls_manager(ca)
    refused(cam, lambda: cam.update(node_cert(other_ca)), "chain")


def test_a_bundle_that_lost_our_own_ca_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    cam = mtls_manager(ca)
    # A bundle cut at a block boundary parses: it just lacks the CA that signs us.
    refused(cam, lambda: cam.set_client_cas(other_ca.pool()), "trust")
    refused(cam, lambda: cam.set_root_cas(other_ca.pool()), "trust")
    # Adding a CA (the overlap step of a CA rotation) is fine.
    both = gen.CertPool([ca.certificate, other_ca.certificate])
    cam.set_client_cas(both)
    cam.set_root_cas(both)


def test_a_truncated_ca_bundle_does_not_parse(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    bundle = (other_ca.pool().to_pem() + ca.pool().to_pem()).encode()
    with pytest.raises(gen.CertificateError, match="truncated"):
        gen.CertPool.from_pem(bundle[: len(bundle) - 80])


def test_losing_a_usage_the_current_certificate_has_is_refused(ca: CertificateAuthority) -> None:
    cam = mtls_manager(ca, "a@localhost")
    err = refused(cam, lambda: cam.update(server_auth_only(ca, "a@localhost")), "usage")
    assert "clientAuth" in str(err)


def test_expired_and_not_yet_valid_certificates_are_refused(ca: CertificateAuthority) -> None:
    cam = mtls_manager(ca, "a@localhost")
    past = datetime.now(UTC) - timedelta(hours=2)
    future = datetime.now(UTC) + timedelta(hours=2)
    old = ca.issue("a@localhost", valid_for=timedelta(hours=1), not_before=past)
    early = ca.issue("a@localhost", valid_for=timedelta(hours=1), not_before=future)
    refused(cam, lambda: cam.update(old), "validity")
    refused(cam, lambda: cam.update(early), "validity")


def test_a_ca_whose_own_validity_ended_fails_the_in_memory_handshake(
    ca: CertificateAuthority,
) -> None:
    """What only OpenSSL sees (the issuing CA expired) is caught by the handshake in memory."""
    short = CertificateAuthority.create("short-lived CA", valid_for=timedelta(seconds=1))
    leaf = short.issue("a@localhost")
    cam = mtls_manager(ca, "a@localhost")
    both = gen.CertPool([ca.certificate, short.certificate])
    cam.set_client_cas(both)
    cam.set_root_cas(both)
    time.sleep(1.2)
    err = refused(cam, lambda: cam.update(leaf), "handshake")
    assert "expired" in str(err).lower() or "verify" in str(err).lower()


def test_the_in_memory_handshake_runs_both_ways(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    ours = mtls_manager(ca).state()
    good = validate.Probe(build_server_context(ours), build_client_context(ours), None)
    assert validate.handshake_in_memory(good) is None
    # The server verifies the client: a client from another CA is refused (TLS 1.3 reports it
    # only after the client's handshake is done: the probe reads once to see it).
    stranger = mtls_manager(other_ca).state()
    bad_client = validate.Probe(
        build_server_context(ours), build_client_context(stranger, True), None
    )
    assert validate.handshake_in_memory(bad_client) is not None
    # The client verifies the server.
    bad_server = validate.Probe(build_server_context(stranger), build_client_context(ours), None)
    why = validate.handshake_in_memory(bad_server)
    assert why is not None and why.startswith("client")


def test_update_all_moves_certificate_and_pools_together(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    """A whole secret swapped at once (cert, key, CA) is one change, valid as a whole."""
    cam = mtls_manager(ca)
    new = node_cert(other_ca)
    cam.update_all(new, client_cas=other_ca.pool(), root_cas=other_ca.pool())
    assert cam.get_certificate() == new
    assert cam.client_cas() == other_ca.pool()
    assert cam.version == 2


# -- on a running node: refused, reported, counted, still serving the old material


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[A, B]) as c:
        yield c
    assert wait_threads_gone(before) == []


def test_a_node_refuses_bad_material_and_keeps_serving_the_old(
    cluster: Cluster, other_ca: CertificateAuthority, tmp_path: Any
) -> None:
    a, b = cluster[A], cluster[B]
    cam = cluster.managers[B]
    old_fp = cam.get_certificate().fingerprint
    out: queue.Queue[Any] = queue.Queue()
    pid = b.spawn(Recorder, out)
    b.subscribe(pid, gen.EventCertRejected)
    truncated = (other_ca.pool().to_pem() + cluster.ca.pool().to_pem()).encode()[:-80]

    attempts = {
        "node_name": lambda: cam.update(cluster.ca.issue(A, hosts=("127.0.0.1",))),
        "chain": lambda: cam.update(other_ca.issue(B, hosts=("127.0.0.1",))),
        "trust": lambda: cam.set_client_cas(other_ca.pool()),
    }
    for check, attempt in attempts.items():
        with pytest.raises(gen.CertValidationError) as info:
            attempt()
        assert info.value.check == check
        _, event = get(out)
        assert isinstance(event, gen.EventCertRejected)
        assert event.reason.startswith(check)
    with pytest.raises(gen.CertificateError, match="truncated"):
        gen.CertPool.from_pem(truncated)
    # A key that does not match its certificate cannot even be loaded.
    other = cluster.ca.issue(B, hosts=("127.0.0.1",))
    (tmp_path / "c.pem").write_bytes(other.to_pem()[0])
    (tmp_path / "k.pem").write_bytes(cam.get_certificate().to_pem()[1])
    from ergo_py.lib import load_x509_key_pair

    with pytest.raises(gen.CertificateError, match="does not match"):
        load_x509_key_pair(tmp_path / "c.pem", tmp_path / "k.pem")

    # Still serving on the old material: a fresh connection presents it.
    echo = b.spawn(Echo)
    assert a.call(echo, "ping") == "ping"
    assert a.network().info(B)["peer_cert_fingerprint"] == old_fp
    assert cam.get_certificate().fingerprint == old_fp
    counted = b._core.observer.cert_rejections  # type: ignore[attr-defined]
    assert counted == {"node_name": 1, "chain": 1, "trust": 1}
