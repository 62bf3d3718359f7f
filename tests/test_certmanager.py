"""gen.CertManager / gen.CertAuthManager: validation, state, contexts, threads."""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from certfixtures import expired_cert, future_cert, node_cert, weak_rsa_cert

from ergo_py import gen
from ergo_py.gen.certmanager import cert_state_of
from ergo_py.lib import CertificateAuthority


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("manager test CA")


@pytest.fixture
def cam(ca: CertificateAuthority) -> Iterator[gen.CertAuthManager]:
    yield gen.create_cert_auth_manager(node_cert(ca))


# -- basics


def test_new_manager_starts_at_version_one(ca: CertificateAuthority) -> None:
    cert = node_cert(ca)
    m = gen.create_cert_manager(cert)
    assert m.version == 1
    assert m.get_certificate() is cert
    assert m.state().version == 1


def test_update_increments_version_and_swaps_certificate(
    ca: CertificateAuthority, cam: gen.CertAuthManager
) -> None:
    new = node_cert(ca)
    cam.update(new)
    assert cam.version == 2
    assert cam.get_certificate() is new
    assert cam.state().certificate is new


def test_get_certificate_func_follows_updates(
    ca: CertificateAuthority, cam: gen.CertAuthManager
) -> None:
    current = cam.get_certificate_func()
    new = node_cert(ca)
    cam.update(new)
    assert current() is new


def test_cert_auth_manager_defaults_match_ergo(cam: gen.CertAuthManager) -> None:
    assert cam.client_cas() is None
    assert cam.root_cas() is None
    assert cam.client_auth() is gen.ClientAuth.NO_CLIENT_CERT
    assert cam.server_name() == ""
    assert isinstance(cam, gen.CertManager)


def test_every_setting_change_bumps_generation_not_version(
    ca: CertificateAuthority, cam: gen.CertAuthManager
) -> None:
    g = cam.state().generation
    cam.set_client_cas(ca.pool())
    cam.set_root_cas(ca.pool())
    cam.set_client_auth(gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN)
    cam.set_server_name("localhost")
    s = cam.state()
    assert s.generation == g + 4
    assert s.version == 1
    assert cam.client_cas() == ca.pool()
    assert cam.root_cas() == ca.pool()
    assert s.client_auth is gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN
    assert s.server_name == "localhost"


def test_pool_is_copied_when_set(ca: CertificateAuthority, cam: gen.CertAuthManager) -> None:
    pool = ca.pool()
    cam.set_client_cas(pool)
    pool.add(CertificateAuthority.create("later").certificate)
    assert len(cam.state().client_cas or ()) == 1


def test_state_is_immutable(cam: gen.CertAuthManager) -> None:
    s = cam.state()
    with pytest.raises(AttributeError):
        s.version = 99  # type: ignore[misc]


# -- CertificateError cases: each keeps the previous certificate


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda ca: expired_cert(ca), id="expired"),
        pytest.param(lambda ca: future_cert(ca), id="not-yet-valid"),
        pytest.param(lambda ca: weak_rsa_cert(), id="unloadable"),
        pytest.param(lambda ca: "not a certificate", id="wrong-type"),
    ],
)
def test_update_with_bad_certificate_raises_and_keeps_previous(
    ca: CertificateAuthority, cam: gen.CertAuthManager, bad: object
) -> None:
    before = cam.state()
    server, client = cam.server_context(), cam.client_context()
    with pytest.raises(gen.CertificateError):
        cam.update(bad(ca))  # type: ignore[operator]
    assert cam.state() is before
    assert cam.version == before.version
    assert cam.server_context() is server
    assert cam.client_context() is client


def test_every_update_builds_and_tries_both_sides(
    ca: CertificateAuthority, cam: gen.CertAuthManager
) -> None:
    """The in-memory handshake that validates a change needs both contexts, so both are built."""
    new = node_cert(ca)
    cam.update(new)
    built: Any = cam._built
    assert (built.server_built, built.client_built) == (True, True)
    with pytest.raises(gen.CertificateError):
        cam.update(weak_rsa_cert())
    assert cert_state_of(cam.client_context()) is cam.state()
    assert cert_state_of(cam.server_context()) is cam.state()
    assert cam.state().certificate.fingerprint == new.fingerprint


def test_key_mismatch_cannot_reach_a_manager(ca: CertificateAuthority) -> None:
    a, b = node_cert(ca), node_cert(ca)
    with pytest.raises(gen.CertificateError, match="does not match"):
        gen.Certificate(a.chain, b.private_key)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda ca: expired_cert(ca), id="expired"),
        pytest.param(lambda ca: future_cert(ca), id="not-yet-valid"),
        pytest.param(lambda ca: weak_rsa_cert(), id="unloadable"),
    ],
)
def test_create_cert_manager_validates(ca: CertificateAuthority, bad: object) -> None:
    cert = bad(ca)  # type: ignore[operator]
    with pytest.raises(gen.CertificateError):
        gen.create_cert_manager(cert)
    with pytest.raises(gen.CertificateError):
        gen.create_cert_auth_manager(cert)


def test_set_client_cas_with_wrong_type_is_a_certificate_error(
    cam: gen.CertAuthManager,
) -> None:
    before = cam.state()
    with pytest.raises(gen.CertificateError):
        cam.set_client_cas("ca.pem")  # type: ignore[arg-type]
    with pytest.raises(gen.CertificateError):
        cam.set_root_cas(["ca"])  # type: ignore[arg-type]
    assert cam.state() is before


@pytest.mark.parametrize(
    "mode", [gen.ClientAuth.REQUEST_CLIENT_CERT, gen.ClientAuth.REQUIRE_ANY_CLIENT_CERT]
)
def test_unverifiable_client_auth_modes_are_refused_with_a_reason(
    cam: gen.CertAuthManager, mode: gen.ClientAuth
) -> None:
    before = cam.state()
    with pytest.raises(gen.ErrUnsupported) as info:
        cam.set_client_auth(mode)
    msg = str(info.value)
    assert mode.name in msg
    assert "VERIFY_CLIENT_CERT_IF_GIVEN" in msg or "REQUIRE_AND_VERIFY_CLIENT_CERT" in msg
    assert cam.state() is before
    assert cam.client_auth() is gen.ClientAuth.NO_CLIENT_CERT


def test_unknown_client_auth_value_is_refused(cam: gen.CertAuthManager) -> None:
    with pytest.raises(gen.ErgoError):
        cam.set_client_auth(42)  # type: ignore[arg-type]


# -- contexts


def test_contexts_are_cached_per_generation(
    ca: CertificateAuthority, cam: gen.CertAuthManager
) -> None:
    s1, c1, i1 = cam.server_context(), cam.client_context(), cam.client_context(True)
    assert cam.server_context() is s1
    assert cam.client_context() is c1
    assert cam.client_context(True) is i1
    cam.set_server_name("localhost")
    assert cam.server_context() is not s1
    assert cam.client_context() is not c1
    assert cam.client_context(True) is not i1


def test_contexts_know_their_state(ca: CertificateAuthority, cam: gen.CertAuthManager) -> None:
    state = cam.state()
    for ctx in (cam.server_context(), cam.client_context(), cam.client_context(True)):
        assert cert_state_of(ctx) is state
    assert cert_state_of(ssl.create_default_context()) is None


def test_server_context_follows_client_auth_mode(cam: gen.CertAuthManager) -> None:
    assert cam.server_context().verify_mode == ssl.CERT_NONE
    cam.set_client_auth(gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN)
    assert cam.server_context().verify_mode == ssl.CERT_OPTIONAL
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    assert cam.server_context().verify_mode == ssl.CERT_REQUIRED


def test_contexts_require_tls12_and_disable_tickets(cam: gen.CertAuthManager) -> None:
    server = cam.server_context()
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server.num_tickets == 0
    assert cam.client_context().minimum_version >= ssl.TLSVersion.TLSv1_2


def test_client_context_checks_hostname_only_with_a_server_name(
    cam: gen.CertAuthManager,
) -> None:
    ctx = cam.client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert not ctx.check_hostname
    cam.set_server_name("localhost")
    assert cam.client_context().check_hostname
    insecure = cam.client_context(insecure_skip_verify=True)
    assert insecure.verify_mode == ssl.CERT_NONE
    assert not insecure.check_hostname


def test_plain_cert_manager_builds_default_contexts(ca: CertificateAuthority) -> None:
    m = gen.create_cert_manager(node_cert(ca))
    assert m.server_context().verify_mode == ssl.CERT_NONE
    assert m.client_context().verify_mode == ssl.CERT_REQUIRED
    assert cert_state_of(m.client_context()) is m.state()


def _listing(path: str) -> set[str]:
    """Our temp files in ``path`` (other processes on the machine come and go there)."""
    try:
        return {name for name in os.listdir(path) if name.startswith("ergo-py-")}
    except OSError:
        return set()


def test_key_material_leaves_no_file_without_memfd(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memfd(*_: object) -> int:
        raise OSError("memfd unavailable")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    dirs = ["/dev/shm", tempfile.gettempdir()]
    before = {d: _listing(d) for d in dirs}
    m = gen.create_cert_auth_manager(node_cert(ca))
    m.update(node_cert(ca))
    assert m.version == 2
    assert {d: _listing(d) for d in dirs} == before


# -- subscriptions


def test_subscribers_are_told_after_each_change(
    ca: CertificateAuthority, cam: gen.CertAuthManager
) -> None:
    seen: list[tuple[int, int]] = []

    def on_change(state: gen.CertState) -> None:
        assert cam.state().generation >= state.generation  # already in force
        seen.append((state.generation, state.version))

    unsubscribe = cam.subscribe(on_change)
    g = cam.state().generation
    cam.update(node_cert(ca))
    cam.set_server_name("x")
    unsubscribe()
    cam.set_server_name("y")
    assert seen == [(g + 1, 2), (g + 2, 2)]


def test_failed_change_notifies_nobody(ca: CertificateAuthority, cam: gen.CertAuthManager) -> None:
    seen: list[gen.CertState] = []
    cam.subscribe(seen.append)
    with pytest.raises(gen.CertificateError):
        cam.update(expired_cert(ca))
    assert seen == []


def test_raising_subscriber_is_logged_not_propagated(
    ca: CertificateAuthority, cam: gen.CertAuthManager, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(_: gen.CertState) -> None:
        raise RuntimeError("subscriber bug")

    seen: list[int] = []
    cam.subscribe(boom)
    cam.subscribe(lambda s: seen.append(s.version))
    cam.update(node_cert(ca))
    assert cam.version == 2
    assert seen == [2]
    assert "subscriber" in caplog.text


# -- threads


def test_concurrent_rotation_never_tears_state(ca: CertificateAuthority) -> None:
    writers, per_writer, readers = 4, 8, 4
    certs = [[node_cert(ca) for _ in range(per_writer)] for _ in range(writers)]
    manager = gen.create_cert_auth_manager(node_cert(ca))
    manager.set_root_cas(ca.pool())  # keeps each rebuild cheap (no system store)
    version_fp: dict[int, str] = {1: manager.get_certificate().fingerprint}
    record_lock = threading.Lock()

    def record(state: gen.CertState) -> None:
        with record_lock:
            version_fp[state.version] = state.certificate.fingerprint

    manager.subscribe(record)
    stop = threading.Event()
    start = threading.Barrier(writers + readers)
    observed: list[list[tuple[int, int, str]]] = [[] for _ in range(readers)]
    errors: list[BaseException] = []

    def write(mine: list[gen.Certificate]) -> None:
        try:
            start.wait(5)
            for i, cert in enumerate(mine):
                manager.update(cert)
                if i % 2:
                    manager.set_server_name(f"n{i}")
        except BaseException as exc:
            errors.append(exc)

    def read(out: list[tuple[int, int, str]]) -> None:
        try:
            start.wait(5)
            for _ in range(20_000):
                s = manager.state()
                ctx_state = cert_state_of(manager.server_context())
                assert ctx_state is not None
                out.append((s.generation, s.version, s.certificate.fingerprint))
                out.append(
                    (ctx_state.generation, ctx_state.version, ctx_state.certificate.fingerprint)
                )
                if stop.is_set():
                    break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in certs]
    threads += [threading.Thread(target=read, args=(o,)) for o in observed]
    for t in threads:
        t.start()
    for t in threads[:writers]:
        t.join(20)
    stop.set()
    for t in threads[writers:]:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    final = manager.state()
    assert final.version == 1 + writers * per_writer
    assert final.generation == 2 + writers * per_writer + writers * (per_writer // 2)
    assert set(version_fp) == set(range(1, final.version + 1))
    assert len(set(version_fp.values())) == len(version_fp)
    for out in observed:
        assert out, "reader saw nothing"
        states = out[0::2]
        gens = [g for g, _, _ in states]
        versions = [v for _, v, _ in states]
        assert gens == sorted(gens)
        assert versions == sorted(versions)
        for _, v, fp in out:
            assert version_fp[v] == fp


def test_key_material_goes_through_memfd_not_a_file(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        pytest.skip("no memfd on this platform")

    def no_files(*_: object, **__: object) -> tuple[int, str]:
        raise AssertionError("a temp file was used although memfd is available")

    monkeypatch.setattr(tempfile, "mkstemp", no_files)
    m = gen.create_cert_auth_manager(node_cert(ca))
    m.update(node_cert(ca))
    m.client_context(insecure_skip_verify=True)
    assert m.version == 2


def test_updates_and_rejections_are_logged_with_fingerprints(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca = CertificateAuthority.create("log CA")
    first, second = node_cert(ca), node_cert(ca)
    manager = gen.create_cert_manager(first)
    with caplog.at_level("INFO", logger="ergo_py.gen.certmanager"):
        manager.update(second)
        with pytest.raises(gen.CertificateError):
            manager.update(expired_cert(ca))
    text = caplog.text
    assert f"updated to version 2: {second.fingerprint[:16]}" in text
    assert f"was {first.fingerprint[:16]}" in text
    assert "rejected" in text and f"keeping {second.fingerprint[:16]}" in text
