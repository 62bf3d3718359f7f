"""A real etcd for tests: one member on 127.0.0.1, free ports, a temporary data dir.

``EtcdServer`` starts ``etcd`` (Debian's ``etcd-server``; ``make test``
installs it when apt is available), waits until ``/health`` says so, and can
be stopped and started again on the same ports and data (an outage). The
``etcd_binary`` helper skips the calling test, with the reason, when there
is no etcd binary to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ergo_py.testing import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds; the machine is shared


def etcd_binary() -> str:
    """The etcd binary's path, or skip the test saying how to get one."""
    path = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if path is None:
        pytest.skip(
            "no etcd binary on PATH: `apt-get install etcd-server` "
            "(make test installs it when apt is available)"
        )
    return path


class EtcdServer:
    """One etcd member on loopback; ``endpoint`` is its client URL."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://{HOST}:{self.client_port}"
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.data_dir = Path(tempfile.mkdtemp(prefix="ergo-etcd-", dir=base))
        self.log_path = self.data_dir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        peer = f"http://{HOST}:{self.peer_port}"
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child holds it)
        try:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--name=ergo-test",
                    f"--data-dir={self.data_dir / 'data'}",
                    f"--listen-client-urls={self.endpoint}",
                    f"--advertise-client-urls={self.endpoint}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=ergo-test={peer}",
                    "--log-level=warn" if self._has_log_level() else "--debug=false",
                ],
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited at start: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"etcd not healthy within {timeout} s: {self.log_tail()}")

    def _has_log_level(self) -> bool:
        out = subprocess.run([self.binary, "--help"], capture_output=True, text=True, check=False)
        return "--log-level" in out.stdout + out.stderr

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/health", timeout=1.0) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the member (SIGTERM, then SIGKILL after 5 s); the data stays."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
