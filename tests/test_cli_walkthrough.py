"""The README's command-line walkthrough, run line by line as written, from a clean copy.

The copy holds the repository's files (tracked and new, not ignored ones:
what a clone has) and lives in /dev/shm, so the development keys the
walkthrough writes never reach a persistent disk. The lines run in one bash,
unchanged, with the package's ``ergo-py`` on PATH; around each the harness
prints a marker and the exit status.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")
PORTS = (11144, 11145)  # the example configs' acceptors


def readme_walkthrough() -> list[str]:
    """The lines of the first ``sh`` block under "## Command line" in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Command line\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README: no sh block under ## Command line"
    return [line for line in block.group(1).splitlines() if line.strip()]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def clean_copy() -> Iterator[Path]:
    if not SHM.is_dir():
        pytest.skip("no /dev/shm: the walkthrough writes private keys, which stay off disk")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot tell a clone's files")
    busy = [p for p in PORTS if not _port_free(p)]
    if busy:
        pytest.skip(f"ports {busy} (the example configs') are taken on this machine")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    dest = Path(tempfile.mkdtemp(prefix="ergo-walkthrough-", dir=SHM))
    try:
        for name in filter(None, files):
            src = ROOT / name.decode()
            if src.is_file():
                (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name.decode())
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def run_lines(cwd: Path, lines: list[str]) -> list[tuple[str, int, str]]:
    """Run ``lines`` in one bash; (line, exit status, output) for each."""
    script = ["exec 2>&1", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for i, line in enumerate(lines):
        script += [f"echo '@@@ start {i}'", line, f'echo "@@@ end {i} $?"']
    script.append("wait")  # the nodes stop (kill sent them SIGTERM)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(cwd),
        "LANG": "C.UTF-8",
    }
    out = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    ).stdout
    results = []
    for i, line in enumerate(lines):
        m = re.search(rf"@@@ start {i}\n(.*?)@@@ end {i} (\d+)\n", out, re.S)
        assert m, f"line {i} ({line!r}) did not finish:\n{out}"
        results.append((line, int(m.group(2)), m.group(1)))
    return results


def test_the_readme_walkthrough_works_as_written(clean_copy: Path) -> None:
    assert (Path(sys.executable).parent / "ergo-py").exists(), "ergo-py is not installed"
    lines = readme_walkthrough()
    results = run_lines(clean_copy, lines)
    by_cmd = {line.split("#")[0].strip(): (rc, out) for line, rc, out in results}

    def result(start: str) -> tuple[int, str]:
        hits = [v for k, v in by_cmd.items() if k.startswith(start)]
        assert len(hits) == 1, f"README walkthrough has no single line starting {start!r}"
        return hits[0]

    refused = "ergo-py node check examples/a.toml --set tls.key="
    for line, rc, out in results:
        if line.startswith(refused):
            # a broken key file: refused, naming the file, the check and the fix
            assert rc == 2, out
            assert "examples/certs/b-key.pem" in out and "check: key matches" in out, out
            assert "Fix:" in out, out
        else:
            assert rc == 0, f"{line!r} exited {rc}:\n{out}"
    assert (
        "examples/a.toml: ok (node a@127.0.0.1)" in by_cmd["ergo-py node check examples/a.toml"][1]
    )
    # two CLI nodes, each hosting an actor from its config, exchange messages
    assert "sent to greeter on b@127.0.0.1" in result("ergo-py send b@127.0.0.1 greeter")[1]
    seen = result("ergo-py call b@127.0.0.1 greeter")[1]
    assert seen.strip().splitlines()[-1] == '["hi from the shell"]', seen
    relayed = result("ergo-py call a@127.0.0.1 relay")[1]
    assert '"a@127.0.0.1 relayed: hello, world, from b@127.0.0.1"' in relayed, relayed
    inspected = result("ergo-py inspect --config examples/a.toml")[1]
    assert "b@127.0.0.1" in inspected and "health: ready" in inspected, inspected
    # the keys were written with mode 0600, in the copy (on /dev/shm) only
    key = clean_copy / "examples" / "certs" / "a-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
