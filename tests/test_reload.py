"""CertReloader: file-system events drive the manager; nothing half-written is ever applied."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import eventually, wait_threads_gone

from ergo_py import gen
from ergo_py.lib import CertificateAuthority
from ergo_py.lib.reload import CertReloader
from ergo_py.testing import Cluster, Echo

NAME = "a@127.0.0.1"
B = "b@127.0.0.1"
HOSTS = ("127.0.0.1",)
WAIT = 6.0


def stays(what: Callable[[], bool], seconds: float = 0.8) -> bool:
    """``what()`` holds throughout ``seconds`` (the watcher had time to act)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not what():
            return False
        time.sleep(0.05)
    return True


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("reload CA")


@pytest.fixture
def files(key_dir: Path, ca: CertificateAuthority) -> tuple[Path, Path, Path]:
    cert_pem, key_pem = ca.issue(NAME, hosts=HOSTS).to_pem()
    c, k, bundle = key_dir / "tls.crt", key_dir / "tls.key", key_dir / "ca.crt"
    c.write_bytes(cert_pem)
    k.write_bytes(key_pem)
    bundle.write_bytes(ca.pool().to_pem().encode())
    return c, k, bundle


@pytest.fixture
def reloader(files: tuple[Path, Path, Path]) -> Iterator[CertReloader]:
    before = set(threading.enumerate())
    c, k, bundle = files
    r = CertReloader(c, k, client_ca_file=bundle, root_ca_file=bundle, retry=0.5)
    r.manager.expect_node_name(NAME)
    with r:
        time.sleep(0.2)  # the watch is set up
        yield r
    assert wait_threads_gone(before) == []


def test_an_atomic_rename_of_a_new_pair_is_applied(
    reloader: CertReloader, files: tuple[Path, Path, Path], ca: CertificateAuthority
) -> None:
    c, k, _ = files
    new = ca.issue(NAME, hosts=HOSTS)
    cert_pem, key_pem = new.to_pem()
    write_atomic(k, key_pem)
    write_atomic(c, cert_pem)
    eventually(lambda: reloader.manager.get_certificate() == new, WAIT)
    assert reloader.reloads == 1
    assert reloader.last_error is None


def test_a_half_written_certificate_waits_for_the_rest(
    reloader: CertReloader, files: tuple[Path, Path, Path], ca: CertificateAuthority
) -> None:
    c, k, _ = files
    old = reloader.manager.get_certificate()
    new = ca.issue(NAME, hosts=HOSTS)
    cert_pem, key_pem = new.to_pem()
    write_atomic(k, key_pem)  # key first: the pair does not match yet
    with c.open("wb") as f:
        f.write(cert_pem[: len(cert_pem) // 2])
        f.flush()
        assert stays(lambda: reloader.manager.get_certificate() == old)
        assert reloader.last_error is not None
        f.write(cert_pem[len(cert_pem) // 2 :])
    eventually(lambda: reloader.manager.get_certificate() == new, WAIT)


def test_a_key_that_does_not_match_is_not_applied(
    reloader: CertReloader, files: tuple[Path, Path, Path], ca: CertificateAuthority
) -> None:
    c, _, _ = files
    old = reloader.manager.get_certificate()
    write_atomic(c, ca.issue(NAME, hosts=HOSTS).to_pem()[0])
    assert stays(lambda: reloader.manager.get_certificate() == old)
    assert "does not match" in str(reloader.last_error)


def test_a_truncated_ca_bundle_and_another_nodes_certificate_are_refused(
    reloader: CertReloader, files: tuple[Path, Path, Path], ca: CertificateAuthority
) -> None:
    c, k, bundle = files
    before = reloader.manager.state()
    other = CertificateAuthority.create("other")
    full = (other.pool().to_pem() + ca.pool().to_pem()).encode()
    write_atomic(bundle, full[:-60])
    assert stays(lambda: reloader.manager.state() is before)
    assert "truncated" in str(reloader.last_error)
    write_atomic(bundle, ca.pool().to_pem().encode())
    eventually(lambda: reloader.last_error is None, 3)
    cert_pem, key_pem = ca.issue("z@127.0.0.1", hosts=HOSTS).to_pem()
    write_atomic(k, key_pem)
    write_atomic(c, cert_pem)
    eventually(lambda: "node_name" in str(reloader.last_error), WAIT)
    assert reloader.manager.get_certificate() == before.certificate


def test_a_kubernetes_data_symlink_swap_is_applied(key_dir: Path, ca: CertificateAuthority) -> None:
    """The secret volume layout: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/."""
    first, second = ca.issue(NAME, hosts=HOSTS), ca.issue(NAME, hosts=HOSTS)

    def version_dir(tag: str, cert: gen.Certificate) -> str:
        d = key_dir / f"..2026_{tag}"
        d.mkdir()
        cert_pem, key_pem = cert.to_pem()
        (d / "tls.crt").write_bytes(cert_pem)
        (d / "tls.key").write_bytes(key_pem)
        (d / "ca.crt").write_bytes(ca.pool().to_pem().encode())
        return d.name

    os.symlink(version_dir("a", first), key_dir / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        os.symlink(f"..data/{name}", key_dir / name)
    before = set(threading.enumerate())
    r = CertReloader(key_dir / "tls.crt", key_dir / "tls.key", client_ca_file=key_dir / "ca.crt")
    with r:
        time.sleep(0.2)
        assert r.manager.get_certificate() == first
        # What the kubelet does: a new timestamped dir, a new link, renamed over ..data.
        os.symlink(version_dir("b", second), key_dir / "..data_tmp")
        os.replace(key_dir / "..data_tmp", key_dir / "..data")
        eventually(lambda: r.manager.get_certificate() == second, WAIT)
    assert wait_threads_gone(before) == []


def test_sighup_forces_a_reload(reloader: CertReloader) -> None:
    generation = reloader.manager.state().generation
    restore = reloader.install_sighup()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        eventually(lambda: reloader.reloads == 1, WAIT)
        assert reloader.manager.state().generation > generation
    finally:
        restore()


def test_a_node_keeps_serving_on_the_old_material_while_files_are_bad(key_dir: Path) -> None:
    before = set(threading.enumerate())
    with Cluster(names=[NAME, B], start=False) as cluster:
        opts = cluster.node_options(NAME)
        cam = cluster.managers[NAME]
        old = cam.get_certificate()
        c, k, bundle = key_dir / "tls.crt", key_dir / "tls.key", key_dir / "ca.crt"
        c.write_bytes(old.to_pem()[0])
        k.write_bytes(old.to_pem()[1])
        bundle.write_bytes(cluster.ca.pool().to_pem().encode())
        with CertReloader(c, k, client_ca_file=bundle, root_ca_file=bundle, manager=cam) as r:
            a = cluster.start(NAME, opts)
            b = cluster.start(B)
            time.sleep(0.2)
            new_pem = cluster.ca.issue(NAME, hosts=HOSTS).to_pem()[0]
            c.write_bytes(new_pem[: len(new_pem) // 3])  # half-written, and left so
            eventually(lambda: r.last_error is not None, WAIT)
            echo = a.spawn(Echo)
            assert b.call(echo, "still here") == "still here"
            assert b.network().info(NAME)["peer_cert_fingerprint"] == old.fingerprint
            assert cam.get_certificate() == old
    assert wait_threads_gone(before) == []
