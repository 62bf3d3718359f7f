"""Local messaging cost: ergo_py processes against pykka's bare ``tell`` / ``ask``.

Both run in the same process, in alternating rounds, so the ratio is what
matters, not the absolute figures. Measured:

- send throughput: one sender (the caller's thread) sends N small messages to
  one process, timed until the receiver has counted all of them;
- call round trip: a caller makes M sequential calls, time per call.

ergo_py does more per message than pykka (a msgpack copy of every message, a
target lookup, per-call reply slots), so a ratio above 1 is expected.

Run: ``.venv/bin/python benchmarks/local_messaging.py [--rounds 5] [--sends 20000] [--calls 2000]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pykka

import ergo_py
from ergo_py import act, gen

MESSAGE = ("msg", 12345, b"x" * 32, {"k": 1})


class ErgoCounter(act.Actor):
    def init(self, expected: int, done: threading.Event) -> None:
        self.expected = expected
        self.done = done
        self.count = 0

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return request


class PykkaCounter(pykka.ThreadingActor):
    def __init__(self, expected: int, done: threading.Event) -> None:
        super().__init__()
        self.expected = expected
        self.done = done
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple):
            self.count += 1
            if self.count == self.expected:
                self.done.set()
            return None
        return message


def ergo_round(node: gen.Node, sends: int, calls: int) -> tuple[float, float]:
    done = threading.Event()
    pid = node.spawn(ErgoCounter, sends, done)
    start = time.perf_counter()
    for _ in range(sends):
        node.send(pid, MESSAGE)
    done.wait(120)
    send_rate = sends / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(calls):
        node.call(pid, i)
    call_us = (time.perf_counter() - start) / calls * 1e6
    node.send_exit(pid, gen.TERMINATE_REASON_SHUTDOWN)
    return send_rate, call_us


def pykka_round(sends: int, calls: int) -> tuple[float, float]:
    done = threading.Event()
    ref = PykkaCounter.start(sends, done)
    start = time.perf_counter()
    for _ in range(sends):
        ref.tell(MESSAGE)
    done.wait(120)
    send_rate = sends / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(calls):
        ref.ask(i)
    call_us = (time.perf_counter() - start) / calls * 1e6
    ref.stop()
    return send_rate, call_us


def _summary(values: list[float]) -> tuple[float, float]:
    """Median and spread (max - min, as a percentage of the median)."""
    med = statistics.median(values)
    return med, (max(values) - min(values)) / med * 100 if med else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sends", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)

    options = gen.NodeOptions()
    options.network.mode = gen.NetworkMode.DISABLED
    results: dict[str, list[float]] = {k: [] for k in ("es", "ec", "ps", "pc")}
    with ergo_py.start_node("bench@localhost", options) as node:
        ergo_round(node, min(args.sends, 1000), min(args.calls, 100))  # warm-up
        pykka_round(min(args.sends, 1000), min(args.calls, 100))
        for _ in range(args.rounds):
            es, ec = ergo_round(node, args.sends, args.calls)
            ps, pc = pykka_round(args.sends, args.calls)
            results["es"].append(es)
            results["ec"].append(ec)
            results["ps"].append(ps)
            results["pc"].append(pc)

    es, es_sp = _summary(results["es"])
    ps, ps_sp = _summary(results["ps"])
    ec, ec_sp = _summary(results["ec"])
    pc, pc_sp = _summary(results["pc"])
    print(f"local messaging, {args.rounds} rounds, {args.sends} sends and {args.calls} calls each")
    print(f"{'metric':<22}{'ergo_py':>14}{'spread':>9}{'pykka':>14}{'spread':>9}{'ratio':>9}")
    print(
        f"{'send (msg/s)':<22}{es:>14,.0f}{es_sp:>8.1f}%{ps:>14,.0f}{ps_sp:>8.1f}%{ps / es:>8.2f}x"
    )
    print(
        f"{'call round trip (us)':<22}{ec:>14.1f}{ec_sp:>8.1f}%{pc:>14.1f}{pc_sp:>8.1f}%"
        f"{ec / pc:>8.2f}x"
    )
    print("ratio: how many times slower ergo_py is than bare pykka (median over rounds)")


if __name__ == "__main__":
    main()
