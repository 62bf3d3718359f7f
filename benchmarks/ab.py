"""A/B of the one-way scenario: two revisions of ergo_py, alternately, in one run.

    python benchmarks/ab.py BASE [NEW] [--rounds 9] [--messages 100000]

``BASE`` and ``NEW`` are git revisions, or ``.`` for the working tree (``NEW``
defaults to it). On a shared, noisy machine a figure measured a minute ago is
no baseline: here both sides are measured in the same run, round after round,
the side that goes first alternating, and the table gives the medians and
the ratio NEW/BASE of each round's pair (their median).

Each side is a worker process whose ``ergo_py`` is that revision's (``git
archive`` of ``ergo_py/`` into a temporary directory, put first on
``PYTHONPATH``); the scenario code is this directory's for both
(``scenarios.server``: node b with its sinks in a process of its own,
``scenarios.client``: node a, ``scenarios.one_way``: what ``make bench``'s
one-way rows measure). Both workers start, connect and warm up before the
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
SCENARIOS = (("ow1", 1), ("ow4", 4))  # name, senders (each to a sink of its own)
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
        print(_TAG + json.dumps({"ready": ergo_py.__file__}), flush=True)
        for line in sys.stdin:
            senders, per_sender = json.loads(line)
            rate = scenarios.one_way(a, senders, per_sender)
            print(_TAG + json.dumps({"rate": rate}), flush=True)


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
        self.rates: dict[str, list[float]] = {name: [] for name, _ in SCENARIOS}

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG) :])  # type: ignore[no-any-return]
            sys.stdout.write(line)
        raise RuntimeError(f"{self.label} ({self.rev}): the worker ended")

    def one_way(self, name: str, senders: int, per_sender: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([senders, per_sender]) + "\n")
        self.proc.stdin.flush()
        rate = float(self._answer()["rate"])
        self.rates[name].append(rate)
        return rate

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
                cells = []
                for name, senders in SCENARIOS:
                    order = (a, b) if n % 2 == 0 else (b, a)
                    for side in order:
                        side.one_way(name, senders, args.messages)
                    cells.append(f"{name} A {a.rates[name][-1]:9,.0f}  B {b.rates[name][-1]:9,.0f}")
                print(
                    f"round {n + 1}: " + "   ".join(cells) + f"   ({time.monotonic() - t0:.0f} s)"
                )
        finally:
            for side in sides:
                side.close()
    a, b = sides
    print()
    print(f"{'msg/s, medians of ' + str(args.rounds):<24} {'A':>10} {'B':>10} {'B/A':>6}")
    for name, senders in SCENARIOS:
        ra, rb = a.rates[name], b.rates[name]
        ratio = statistics.median(y / x for x, y in zip(ra, rb, strict=True))
        label = f"one-way, {senders} sender" + ("s" if senders > 1 else "")
        print(
            f"{label:<24} {statistics.median(ra):>10,.0f} {statistics.median(rb):>10,.0f} "
            f"{ratio:>6.2f}"
        )
    print("(B/A: the median of each round's ratio; both sides measured in the same run)")


if __name__ == "__main__":
    main()
