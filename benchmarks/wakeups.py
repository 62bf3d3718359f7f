"""Per call and per message: CPU and wake-ups of every thread on both nodes.

Node b (``pong``, ``sink``) runs in a spawned process, node a here, over
mutual TLS on loopback (``scenarios``' set-up). For a stretch of sequential
calls from a plain thread (``call``), of one actor's sends to b's sink
(``oneway``), or of a raw TLS request/response (``raw``, the floor), it reads
each thread's CPU time and context switches from ``/proc`` before and after
and prints them divided by the count. A voluntary context switch is a thread
going to sleep, so each one is a wake-up somebody paid for: a hand-over to
another thread, or a wait for the network.

Run: ``python benchmarks/wakeups.py [call|oneway|raw] [count]``.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scenarios

from ergo_py import gen
from ergo_py.lib import CertificateAuthority

Snapshot = dict[str, tuple[float, int, int]]  # thread kind -> (cpu s, voluntary, involuntary)


def _kind(name: str) -> str:
    name = re.sub(r"\[.*\]", "", name)
    return re.sub(r"[-_ ]?\d+$", "", name) or "thread"


def snapshot() -> Snapshot:
    """This process's threads grouped by kind (name without its number)."""
    out: dict[str, list[float]] = {}
    for t in threading.enumerate():
        tid = t.native_id
        try:
            sched = Path(f"/proc/self/task/{tid}/schedstat").read_text()
            status = Path(f"/proc/self/task/{tid}/status").read_text()
        except (OSError, TypeError):
            continue
        cpu = int(sched.split()[0]) / 1e9  # ns on the CPU: finer than stat's clock ticks
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
        inv = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
        row = out.setdefault(_kind(t.name), [0.0, 0, 0])
        row[0] += cpu
        row[1] += vol
        row[2] += inv
    return {k: (v[0], int(v[1]), int(v[2])) for k, v in out.items()}


def _serve(ca_pem: Any, port_q: Any, cmd_q: Any, snap_q: Any) -> None:
    opts = scenarios.options(ca_pem, scenarios.B)
    import ergo_py
    from ergo_py.testing import Echo

    with ergo_py.start_node(scenarios.B, opts) as node:
        node.spawn_register("pong", Echo)
        node.spawn_register("sink", scenarios.Sink)
        port_q.put(node.network().acceptors()[0].port)
        while cmd_q.get() != "stop":
            snap_q.put(snapshot())


def _delta(after: Snapshot, before: Snapshot, n: int) -> list[tuple[str, float, float, float]]:
    rows = []
    for kind, (cpu, vol, inv) in sorted(after.items()):
        c0, v0, i0 = before.get(kind, (0.0, 0, 0))
        if vol - v0 or cpu - c0:
            rows.append((kind, (cpu - c0) / n * 1e6, (vol - v0) / n, (inv - i0) / n))
    return rows


def _print(title: str, rows: list[tuple[str, float, float, float]]) -> None:
    print(f"{title}")
    print(f"  {'thread':<28}{'CPU µs':>10}{'sleeps':>10}{'preempted':>11}")
    for kind, cpu, vol, inv in rows:
        print(f"  {kind:<28}{cpu:>10.2f}{vol:>10.2f}{inv:>11.2f}")
    total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"  {'all':<28}{total[0]:>10.1f}{total[1]:>10.2f}")


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "call"
    n = int(argv[1]) if len(argv) > 1 else 5000
    ca = CertificateAuthority.create("wakeups CA")
    ca_pem = ca.to_pem()
    if kind == "raw":
        import baseline_tls

        material = baseline_tls.TLSMaterial.issued_by(ca, scenarios.HOST)
        before = snapshot()
        t0 = time.perf_counter()
        r = baseline_tls.measure(material, messages=1000, rtts=n, setups=1)
        print(f"raw TLS: rtt p50 {r.rtt_p50_us:.0f} µs ({time.perf_counter() - t0:.1f} s)")
        _print("this process (client and server threads)", _delta(snapshot(), before, n))
        return 0
    ctx = mp.get_context("spawn")
    port_q, cmd_q, snap_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_serve, args=(ca_pem, port_q, cmd_q, snap_q), daemon=True)
    proc.start()
    import ergo_py

    try:
        port = port_q.get(timeout=60)
        a_name = f"a@{scenarios.HOST}"
        with ergo_py.start_node(a_name, scenarios.options(ca_pem, a_name)) as a:
            a.network().add_route("b@.*", gen.NetworkRoute(host=scenarios.HOST, port=port))
            pong = gen.ProcessID("pong", scenarios.B)
            sink = gen.ProcessID("sink", scenarios.B)
            for i in range(500):
                a.call(pong, i)
            sender = a.spawn(scenarios.Sender)
            a.call(sender, (sink, 1000))
            a.call(sink, "reset")
            cmd_q.put("snap")
            b0 = snap_q.get()
            a0 = snapshot()
            t0 = time.perf_counter()
            if kind == "call":
                for i in range(n):
                    a.call(pong, i)
            else:
                a.call(sender, (sink, n), 120)
                got = 0
                while got < n:
                    got += a.call(sink, "reset")
            took = time.perf_counter() - t0
            a1 = snapshot()
            cmd_q.put("snap")
            b1 = snap_q.get()
            what = "calls" if kind == "call" else "messages"
            print(f"{n} {what} in {took:.2f} s: {n / took:,.0f}/s, {took / n * 1e6:.0f} µs each")
            _print("node a (caller / sender), per " + what[:-1], _delta(a1, a0, n))
            _print("node b (callee / receiver), per " + what[:-1], _delta(b1, b0, n))
    finally:
        cmd_q.put("stop")
        proc.join(15)
        if proc.is_alive():
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
