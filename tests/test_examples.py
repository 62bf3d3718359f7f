"""The examples run as documented (so they cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mtls_ping_pong_rotates_b_between_calls_without_noise() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mtls_ping_pong.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(" via ")[0] for line in lines] == [f"('pong', {i})" for i in range(3)]
    assert len({line.split(" via ")[1] for line in lines}) == 3  # a new certificate each call
    assert result.stderr == ""  # no warnings on a clean run
