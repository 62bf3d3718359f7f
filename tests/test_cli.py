"""The ergo-py command: certificate files and the demo."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ergo_py import gen, lib
from ergo_py.cli.main import main


def test_ca_init_then_issue_writes_a_usable_node_certificate(tmp_path: Path) -> None:
    assert main(["cert", "ca-init", "--dir", str(tmp_path / "ca")]) == 0
    prefix = str(tmp_path / "a")
    assert (
        main(["cert", "issue", "a@localhost", "--ca-dir", str(tmp_path / "ca"), "--out", prefix])
        == 0
    )
    cert = lib.load_x509_key_pair(f"{prefix}.pem", f"{prefix}-key.pem")
    assert list(cert.node_names) == ["a@localhost"]
    assert stat.S_IMODE((tmp_path / "a-key.pem").stat().st_mode) == 0o600
    pool = gen.CertPool.from_file(tmp_path / "ca" / "ca.pem")
    assert len(pool) == 1


def test_existing_files_are_not_overwritten_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = str(tmp_path / "dev")
    assert main(["cert", "self-signed", "--out", prefix]) == 0
    assert main(["cert", "self-signed", "--out", prefix]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["cert", "self-signed", "--out", prefix, "--force"]) == 0


def test_show_with_a_mismatched_key_fails_cleanly(tmp_path: Path) -> None:
    main(["cert", "self-signed", "--out", str(tmp_path / "one")])
    main(["cert", "self-signed", "--out", str(tmp_path / "two")])
    status = main(
        ["cert", "show", str(tmp_path / "one.pem"), "--key", str(tmp_path / "two-key.pem")]
    )
    assert status == 2


def test_demo_cluster_rotates_live_without_failed_calls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "calls failed or answered wrong:  0" in out
    assert "identity verified: True" in out
    assert "demo passed" in out
