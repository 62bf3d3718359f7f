"""ergo_py node to node over mutual TLS, beside the raw asyncio TLS ceiling.

Node b runs in a separate OS process (a ``pong`` process answering calls and
a ``sink`` counting messages); node a runs here. Each round measures, with the
raw baseline (``baseline_tls.measure``) in the same round:

- one-way messages/s from a to b's sink (vs raw frames/s, 64 per write);
- call round trip p50/p99 (vs raw request/response);
- connection set-ups/s: dial + TLS + Ergo handshake + pool joins + one call
  (vs raw TLS connection + one request/response).

Run: ``python benchmarks/node_network.py [pool size]`` (``make bench`` has its
own scenarios). Both nodes use uvloop when it is installed (``pip install
ergo_py[fast]``); ``ERGO_PY_LOOP=asyncio`` forces the standard loop. The
baseline always runs on the standard asyncio loop; the table says which loop
each side used.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import baseline_tls
from scenarios import Sink

import ergo_py
from ergo_py import gen
from ergo_py.lib import CertificateAuthority
from ergo_py.net.loop import LOOP_ENV, loop_kind
from ergo_py.testing import Echo

HOST = "127.0.0.1"
MESSAGE = baseline_tls.MESSAGE


def _options(ca_pem: tuple[bytes, bytes], name: str, pool_size: int) -> gen.NodeOptions:
    ca = CertificateAuthority.from_pem(*ca_pem)
    cam = gen.create_cert_auth_manager(ca.issue(name, hosts=(HOST,)))
    cam.set_client_cas(ca.pool())
    cam.set_root_cas(ca.pool())
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    options = gen.NodeOptions(cert_manager=cam)
    options.network.cookie = "bench"
    options.network.registrar_enabled = False
    options.network.pool_size = pool_size
    options.network.acceptors = [gen.AcceptorOptions(host=HOST, port=0, port_range=1)]
    return options


def _serve(ca_pem: tuple[bytes, bytes], pool_size: int, port_q: Any, stop_ev: Any) -> None:
    options = _options(ca_pem, f"b@{HOST}", pool_size)
    with ergo_py.start_node(f"b@{HOST}", options) as node:
        node.spawn_register("pong", Echo)
        node.spawn_register("sink", Sink)
        backend = node.network()
        port_q.put(backend.acceptors()[0].port)
        while not stop_ev.is_set():
            time.sleep(0.05)


def _one_way(a: gen.Node, n: int) -> float:
    sink = gen.ProcessID("sink", f"b@{HOST}")
    a.call(sink, "reset")
    start = time.perf_counter()
    for _ in range(n):
        a.send(sink, MESSAGE)
    received = 0
    deadline = time.monotonic() + 60
    while received < n and time.monotonic() < deadline:
        received += a.call(sink, "reset")
    elapsed = time.perf_counter() - start
    assert received == n, (received, n)
    return n / elapsed


def _rtt(a: gen.Node, n: int) -> list[float]:
    pong = gen.ProcessID("pong", f"b@{HOST}")
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        a.call(pong, i)
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def _setups(a: gen.Node, n: int) -> float:
    pong = gen.ProcessID("pong", f"b@{HOST}")
    start = time.perf_counter()
    for i in range(n):
        a.network().disconnect(f"b@{HOST}")
        a.call(pong, i)
    return n / (time.perf_counter() - start)


def _spread(values: list[float]) -> float:
    med = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / med if med else 0.0


def main(
    rounds: int = 3,
    messages: int = 30_000,
    calls: int = 1_000,
    setups: int = 30,
    pool_size: int = gen.DEFAULT_POOL_SIZE,
) -> None:
    ca = CertificateAuthority.create("bench CA")
    ca_pem = ca.to_pem()
    material = baseline_tls.TLSMaterial.issued_by(ca, HOST)
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    proc = ctx.Process(target=_serve, args=(ca_pem, pool_size, port_q, stop_ev), daemon=True)
    proc.start()
    rows: dict[str, list[float]] = {k: [] for k in ("ow", "p50", "p99", "su")}
    base: dict[str, list[float]] = {k: [] for k in ("ow", "p50", "p99", "su")}
    try:
        port = port_q.get(timeout=60)
        with ergo_py.start_node(f"a@{HOST}", _options(ca_pem, f"a@{HOST}", pool_size)) as a:
            a.network().add_route("b@.*", gen.NetworkRoute(host=HOST, port=port))
            _rtt(a, 100)  # connect and warm up
            for _ in range(rounds):
                rows["ow"].append(_one_way(a, messages))
                samples = _rtt(a, calls)
                rows["p50"].append(statistics.median(samples))
                rows["p99"].append(baseline_tls.percentile(samples, 0.99))
                rows["su"].append(_setups(a, setups))
                r = baseline_tls.measure(material, messages=messages, rtts=calls, setups=setups)
                base["ow"].append(r.one_way_per_s)
                base["p50"].append(r.rtt_p50_us)
                base["p99"].append(r.rtt_p99_us)
                base["su"].append(r.setups_per_s)
    finally:
        stop_ev.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()

    def med(d: dict[str, list[float]], k: str) -> float:
        return statistics.median(d[k])

    print(
        f"node to node over mTLS, pool of {pool_size} links, {rounds} rounds"
        " (median, spread = (max-min)/median)"
    )
    print(
        f"event loop: ergo_py {loop_kind()} ({LOOP_ENV}={os.environ.get(LOOP_ENV, '')!r}),"
        " raw TLS baseline asyncio"
    )
    print(f"{'metric':<26}{'ergo_py':>12}{'spread':>8}{'raw TLS':>12}{'spread':>8}{'ratio':>8}")
    lines = [
        ("one-way msg/s", "ow", ">= 0.40", lambda e, b: e / b, 0.40, True),
        ("call p50 (us)", "p50", "<= 2.00", lambda e, b: e / b, 2.0, False),
        ("call p99 (us)", "p99", "", lambda e, b: e / b, 0.0, False),
        ("set-ups/s", "su", ">= 0.70", lambda e, b: e / b, 0.70, True),
    ]
    for label, key, target, ratio_of, bound, higher in lines:
        e, b = med(rows, key), med(base, key)
        ratio = ratio_of(e, b)
        verdict = ""
        if target:
            ok = ratio >= bound if higher else ratio <= bound
            verdict = f"  target {target}: {'met' if ok else 'MISSED'}"
        print(
            f"{label:<26}{e:>12,.1f}{_spread(rows[key]):>7.0f}%{b:>12,.1f}"
            f"{_spread(base[key]):>7.0f}%{ratio:>8.2f}{verdict}"
        )


if __name__ == "__main__":
    main(pool_size=int(sys.argv[1]) if len(sys.argv) > 1 else gen.DEFAULT_POOL_SIZE)
