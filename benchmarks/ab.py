"""A/B of make bench's node scenarios: two revisions of ergo_py, alternately, in one run.

    python benchmarks/ab.py BASE [NEW] [--rounds 9] [--messages 100000]
                            [--setups 40] [--seconds 1.0]

Measured: one-way msg/s (1 sender, 4 -> 4), set-ups/s (disconnect, then a
call that dials) and calls/s and p50 with one caller, each as
``scenarios`` does it for the table.

``BASE`` and ``NEW`` are git revisions, or ``.`` for the working tree (``NEW``
defaults to it). On a shared, noisy machine a figure measured a minute ago is
no baseline: here both sides are measured in the same run, round after round,
the side that goes first alternating, and the table gives the medians and
the ratio NEW/BASE of each round's pair (their median).

Each side is a worker process whose ``ergo_py`` is that revision's (``git
archive`` of ``ergo_py/`` into a temporary directory, put first on
``PYTHONPATH``); the scenario code is this directory's for both
(``scenarios.server``: node b with its sinks and pongs in a process of its
own, ``scenarios.client``: node a). Both workers start, connect and warm up before the
first round and stay up throughout, idle while the other side measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name, what it measures (one figure per run), higher better?
SCENARIOS = (
    ("ow1", "one-way msg/s, 1 sender", True),
    ("ow4", "one-way msg/s, 4 senders", True),
    ("setup", "set-ups/s", True),
    ("call", "calls/s, 1 caller", True),
    ("p50", "call p50 µs, 1 caller", False),
)
_TAG = "AB "  # the worker's answers on stdout; anything else there is passed through


def worker() -> None:
    """One side: node b (a child process) and node a, then one-way runs on request."""
    sys.path.insert(0, str(HERE))
    import scenarios

    import ergo_py
    from ergo_py.lib import CertificateAuthority

    where = os.environ.get("AB_ERGO_PY", "")
    if where and not ergo_py.__file__.startswith(where):  # type: ignore[union-attr]
        raise SystemExit(f"ergo_py imported from {ergo_py.__file__}, not from {where}")
    ca_pem = CertificateAuthority.create("ab CA").to_pem()
    with scenarios.server(ca_pem) as srv, scenarios.client(srv) as a:
        scenarios.one_way(a, 1, 2_000)  # warm up, untimed
        scenarios.one_way(a, 4, 2_000)
        scenarios.setups(a, 5)
        scenarios.ergo_calls(a, 1, 0.2)
        print(_TAG + json.dumps({"ready": ergo_py.__file__}), flush=True)
        for line in sys.stdin:
            messages, setups, seconds = json.loads(line)
            calls = scenarios.ergo_calls(a, 1, seconds)
            figures = {
                "ow1": scenarios.one_way(a, 1, messages),
                "ow4": scenarios.one_way(a, 4, messages),
                "setup": scenarios.setups(a, setups),
                "call": calls.replies / calls.elapsed,
                "p50": calls.p50_us,
            }
            print(_TAG + json.dumps(figures), flush=True)


class Side:
    """A worker process running one revision."""

    def __init__(self, label: str, rev: str, tmp: Path) -> None:
        self.label = label
        self.rev = rev
        if rev == ".":
            src = ROOT
        else:
            src = tmp / label
            src.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", rev, "ergo_py"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
        env["AB_ERGO_PY"] = str(src / "ergo_py")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(src),
        )
        self.where = self._answer()["ready"]
        self.figures: dict[str, list[float]] = {name: [] for name, _, _ in SCENARIOS}

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG) :])  # type: ignore[no-any-return]
            sys.stdout.write(line)
        raise RuntimeError(f"{self.label} ({self.rev}): the worker ended")

    def measure(self, messages: int, setups: int, seconds: float) -> None:
        """One run of every scenario, one after the other."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([messages, setups, seconds]) + "\n")
        self.proc.stdin.flush()
        for name, figure in self._answer().items():
            self.figures[name].append(float(figure))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?", help="git revision, or . for the working tree")
    parser.add_argument("new", nargs="?", default=".", help="the same (default: .)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--messages", type=int, default=100_000, help="per sender and run")
    parser.add_argument("--setups", type=int, default=40, help="set-ups per run")
    parser.add_argument("--seconds", type=float, default=1.0, help="of calls per run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    if args.base is None:
        parser.error("a base revision is needed")
    with tempfile.TemporaryDirectory(prefix="ergo-ab-") as tmp:
        sides: list[Side] = []
        try:
            for label, rev in (("A", args.base), ("B", args.new)):
                sides.append(Side(label, rev, Path(tmp)))
            for side in sides:
                print(f"{side.label} = {side.rev}: {side.where}")
            a, b = sides
            for n in range(args.rounds):
                t0 = time.monotonic()
                for side in (a, b) if n % 2 == 0 else (b, a):
                    side.measure(args.messages, args.setups, args.seconds)
                cells = [
                    f"{name} A {a.figures[name][-1]:,.0f} B {b.figures[name][-1]:,.0f}"
                    for name, _, _ in SCENARIOS
                ]
                print(f"round {n + 1}: " + "  ".join(cells) + f"  ({time.monotonic() - t0:.0f} s)")
        finally:
            for side in sides:
                side.close()
    a, b = sides
    print()
    print(f"{'medians of ' + str(args.rounds) + ' rounds':<26} {'A':>10} {'B':>10} {'B/A':>6}")
    for name, label, higher in SCENARIOS:
        fa, fb = a.figures[name], b.figures[name]
        ratio = statistics.median(y / x for x, y in zip(fa, fb, strict=True))
        mark = "↑" if higher else "↓"
        print(
            f"{label + ' ' + mark:<26} {statistics.median(fa):>10,.0f} "
            f"{statistics.median(fb):>10,.0f} {ratio:>6.2f}"
        )
    print("(B/A: the median of each round's ratio; both sides measured in the same run)")


if __name__ == "__main__":
    main()
