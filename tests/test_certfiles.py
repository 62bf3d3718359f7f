"""CertFileWatcher: certificate files on disk feed a live cert manager."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from ergo_py import gen
from ergo_py.lib import CertFileWatcher, CertificateAuthority

NAME = "a@127.0.0.1"


def write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically (new inode), as rotation tools do."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save(d: Path, cert: gen.Certificate) -> tuple[Path, Path]:
    cert_pem, key_pem = cert.to_pem()
    write(d / "node-key.pem", key_pem)
    write(d / "node.pem", cert_pem)
    return d / "node.pem", d / "node-key.pem"


def save_ca(d: Path, *cas: CertificateAuthority) -> Path:
    write(d / "ca.pem", b"".join(ca.to_pem()[0] for ca in cas))
    return d / "ca.pem"


def poll_twice(w: CertFileWatcher) -> bool:
    """A change is applied once the files held still across two polls."""
    first = w.check()
    return w.check() or first


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("certfiles test CA")


def test_initial_files_give_a_cert_auth_manager_with_their_certificate_and_pools(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    cert = ca.issue(NAME)
    cert_file, key_file = save(key_dir, cert)
    ca_file = save_ca(key_dir, ca)
    w = CertFileWatcher(cert_file, key_file, client_ca_file=ca_file, root_ca_file=ca_file)
    m = w.manager
    assert isinstance(m, gen.CertAuthManager)
    assert m.get_certificate().fingerprint == cert.fingerprint
    assert m.client_cas() is not None and m.root_cas() is not None
    assert m.client_cas().fingerprints == ca.pool().fingerprints  # type: ignore[union-attr]


def test_bad_initial_files_raise_a_certificate_error_naming_them(key_dir: Path) -> None:
    write(key_dir / "node.pem", b"garbage")
    write(key_dir / "node-key.pem", b"garbage")
    with pytest.raises(gen.CertificateError, match=r"node\.pem"):
        CertFileWatcher(key_dir / "node.pem", key_dir / "node-key.pem")


def test_rotated_files_change_the_managers_version_and_fingerprint(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    w = CertFileWatcher(*save(key_dir, ca.issue(NAME)))
    before = w.manager.version
    new = ca.issue(NAME)
    save(key_dir, new)
    assert poll_twice(w)
    assert w.manager.version == before + 1
    assert w.manager.get_certificate().fingerprint == new.fingerprint


def test_a_change_is_not_applied_before_the_files_held_still_for_two_polls(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    w = CertFileWatcher(*save(key_dir, ca.issue(NAME)))
    save(key_dir, ca.issue(NAME))
    assert not w.check()
    assert w.manager.version == 1
    assert w.check()
    assert w.manager.version == 2


def test_unchanged_files_do_not_touch_the_manager(key_dir: Path, ca: CertificateAuthority) -> None:
    cert = ca.issue(NAME)
    w = CertFileWatcher(*save(key_dir, cert))
    save(key_dir, cert)  # same content, new inode
    assert not poll_twice(w)
    assert w.manager.version == 1


def test_garbage_files_keep_the_old_certificate_and_log_the_file_names(
    key_dir: Path, ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    cert = ca.issue(NAME)
    cert_file, key_file = save(key_dir, cert)
    w = CertFileWatcher(cert_file, key_file)
    write(cert_file, b"-----BEGIN CERTIFICATE-----\nhalf a cert")
    with caplog.at_level(logging.ERROR, logger="ergo_py.lib.certfiles"):
        assert not poll_twice(w)
    assert w.manager.get_certificate().fingerprint == cert.fingerprint
    assert w.manager.version == 1
    assert w.last_error is not None and str(cert_file) in w.last_error
    assert str(cert_file) in caplog.text and str(key_file) in caplog.text


def test_a_key_that_does_not_match_keeps_the_old_certificate(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    cert = ca.issue(NAME)
    cert_file, key_file = save(key_dir, cert)
    w = CertFileWatcher(cert_file, key_file)
    write(cert_file, ca.issue(NAME).to_pem()[0])  # new cert, old key
    assert not poll_twice(w)
    assert w.manager.get_certificate().fingerprint == cert.fingerprint
    assert w.last_error is not None


def test_the_next_change_after_a_failure_is_applied(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    cert_file, key_file = save(key_dir, ca.issue(NAME))
    w = CertFileWatcher(cert_file, key_file)
    new = ca.issue(NAME)
    write(cert_file, new.to_pem()[0])  # the cert arrives first: mismatched for now
    assert not poll_twice(w)
    write(key_file, new.to_pem()[1])
    assert poll_twice(w)
    assert w.manager.get_certificate().fingerprint == new.fingerprint
    assert w.last_error is None


def test_a_changed_ca_file_replaces_the_pools(key_dir: Path, ca: CertificateAuthority) -> None:
    cert_file, key_file = save(key_dir, ca.issue(NAME))
    ca_file = save_ca(key_dir, ca)
    w = CertFileWatcher(cert_file, key_file, client_ca_file=ca_file, root_ca_file=ca_file)
    m = w.manager
    assert isinstance(m, gen.CertAuthManager)
    ca2 = CertificateAuthority.create("certfiles test CA 2")
    save_ca(key_dir, ca, ca2)
    assert poll_twice(w)
    want = ca.pool().fingerprints + ca2.pool().fingerprints
    assert m.client_cas().fingerprints == want  # type: ignore[union-attr]
    assert m.root_cas().fingerprints == want  # type: ignore[union-attr]


def test_a_broken_ca_file_keeps_the_pool_but_not_a_new_certificate_back(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    cert_file, key_file = save(key_dir, ca.issue(NAME))
    ca_file = save_ca(key_dir, ca)
    w = CertFileWatcher(cert_file, key_file, client_ca_file=ca_file)
    m = w.manager
    assert isinstance(m, gen.CertAuthManager)
    write(ca_file, b"not a CA")
    new = ca.issue(NAME)
    save(key_dir, new)
    assert poll_twice(w)
    assert m.get_certificate().fingerprint == new.fingerprint
    assert m.client_cas().fingerprints == ca.pool().fingerprints  # type: ignore[union-attr]
    assert w.last_error is not None and str(ca_file) in w.last_error


def test_an_existing_manager_is_fed_and_on_reload_is_called(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    first = ca.issue(NAME)
    m = gen.create_cert_manager(first)
    seen: list[int] = []
    files = save(key_dir, first)
    w = CertFileWatcher(*files, manager=m, on_reload=lambda s: seen.append(s.version))
    assert w.manager is m and m.version == 1
    save(key_dir, ca.issue(NAME))
    assert poll_twice(w)
    assert seen == [2]


def test_ca_files_need_a_cert_auth_manager(key_dir: Path, ca: CertificateAuthority) -> None:
    cert = ca.issue(NAME)
    cert_file, key_file = save(key_dir, cert)
    with pytest.raises(gen.ErgoError, match="CertAuthManager"):
        CertFileWatcher(
            cert_file,
            key_file,
            client_ca_file=save_ca(key_dir, ca),
            manager=gen.create_cert_manager(cert),
        )


@pytest.mark.parametrize("interval", [0, -1, 3600])
def test_an_unbounded_poll_interval_is_refused(
    key_dir: Path, ca: CertificateAuthority, interval: float
) -> None:
    with pytest.raises(gen.ErrIncorrect):
        CertFileWatcher(*save(key_dir, ca.issue(NAME)), interval=interval)


def test_the_polling_thread_picks_up_a_rotation_and_stops_idempotently(
    key_dir: Path, ca: CertificateAuthority
) -> None:
    w = CertFileWatcher(*save(key_dir, ca.issue(NAME)), interval=0.05)
    new = ca.issue(NAME)
    with w:
        assert w.running
        save(key_dir, new)
        deadline = time.monotonic() + 5.0
        while w.manager.version == 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert w.manager.get_certificate().fingerprint == new.fingerprint
    assert not w.running
    w.stop()  # again: no error
