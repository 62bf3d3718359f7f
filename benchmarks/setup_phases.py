"""Where a connection set-up's time goes: ergo_py against raw TLS, phase by phase.

The set-up figure of ``make bench`` (``scenarios.setups``) is, per set-up,
``network.disconnect(b)`` then one call to b (which dials: TCP, TLS, the
handshake, then the call). The raw baseline (``baseline_tls._setup_rate``) is
TCP + TLS + one request, then ``close()``. Here both run alternately in the
same run (rounds of ``n`` set-ups each, medians), node b and the raw server
each in a process of their own, and each set-up is cut into phases with
``perf_counter`` stamps taken by wrappers installed on node a's dialer (this
process only; the library is not changed):

- close: ``disconnect()`` until it returns (the Close frames crossing);
- to loop: the calling thread's request reaching the loop (``Dialer.connect``);
- TCP + TLS: ``create_connection`` until the link's ``connection_made``;
- handshake: until the acceptor's answer completed our handshake;
- request: from there until the call returned in the calling thread.

The raw side times ``sock_connect`` (TCP) and the TLS handshake on that
socket separately. CPU per set-up (all threads, ``/proc/<pid>/task/*/schedstat``)
is given for both ends of both.

Run: ``python benchmarks/setup_phases.py [rounds] [n] [variant]``; with a variant
(``VARIANTS``), the two columns are ergo_py with that change off and on.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import baseline_tls
import scenarios

import ergo_py
from ergo_py import gen
from ergo_py.lib import CertificateAuthority
from ergo_py.net.link import LinkProtocol
from ergo_py.node.dialer import Dialer


def _uncached_anchors(off: Callable[[], bool]) -> None:
    """While ``off()``: every connection checks its peer's CA anew (no anchor cache)."""
    from ergo_py.node import trust

    cached = trust._anchor

    def anchor(*args: Any) -> Any:
        if off():
            trust._anchors.clear()
        return cached(*args)

    trust._anchor = anchor  # type: ignore[assignment]


def _write_from_thread(off: Callable[[], bool]) -> None:
    """While ``off()``: a send that dials writes from its own thread once connected."""
    from ergo_py.node.network import TCPBackend

    on_loop = TCPBackend._dial_and_send

    def dial_and_send(backend: TCPBackend, node: str, data: bytes, order: int) -> None:
        if not off():
            return on_loop(backend, node, data, order)
        backend._connection(node)
        backend._send_data(node, data, order)

    TCPBackend._dial_and_send = dial_and_send  # type: ignore[method-assign]


# A/B of one change: each installs, in both processes, a switch that turns
# the change off while the ``off`` event is set (alternate rounds).
VARIANTS: dict[str, Callable[[Callable[[], bool]], None]] = {
    "anchors": _uncached_anchors,
    "dial-write": _write_from_thread,
}

ERGO_PHASES = ("close", "to loop", "TCP + TLS", "handshake", "request")
RAW_PHASES = ("TCP", "TLS", "request", "close")


def cpu_s(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far (ns resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue
    return total / 1e9


def _serve_b(ca_pem: Any, port_q: Any, stop_ev: Any, variant: str, off: Any) -> None:
    from ergo_py.testing import Echo

    if variant:
        VARIANTS[variant](off.is_set)
    with ergo_py.start_node(scenarios.B, scenarios.options(ca_pem, scenarios.B)) as node:
        node.spawn_register("pong0", Echo)
        port_q.put(node.network().acceptors()[0].port)
        stop_ev.wait()


class Stamps:
    """Wrappers on node a's dialer that note when each phase of a dial ends."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def _wrap(self, cls: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(cls, name)
        setattr(cls, name, make(original))
        self._undo.append(lambda: setattr(cls, name, original))

    def install(self) -> None:
        marks = self.marks

        def connect(original: Any) -> Any:
            async def wrapped(dialer: Dialer, node: str) -> Any:
                marks.setdefault("to loop", time.perf_counter())
                return await original(dialer, node)

            return wrapped

        def open_link(original: Any) -> Any:
            async def wrapped(dialer: Dialer, *args: Any) -> Any:
                marks.setdefault("dial", time.perf_counter())
                return await original(dialer, *args)

            return wrapped

        def made(original: Any) -> Any:
            def wrapped(link: LinkProtocol, transport: Any) -> None:
                marks.setdefault("TCP + TLS", time.perf_counter())
                original(link, transport)

            return wrapped

        def complete(original: Any) -> Any:
            def wrapped(link: LinkProtocol, done: Any, trailing: bytes) -> None:
                marks.setdefault("handshake", time.perf_counter())
                original(link, done, trailing)

            return wrapped

        self._wrap(Dialer, "connect", connect)
        self._wrap(Dialer, "_open_link", open_link)
        self._wrap(LinkProtocol, "connection_made", made)
        self._wrap(LinkProtocol, "_complete", complete)

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()


def ergo_round(a: gen.Node, stamps: Stamps, n: int, b_pid: int) -> tuple[dict[str, float], float]:
    """Medians per phase (µs) over ``n`` set-ups; and set-ups per second."""
    pong = gen.ProcessID("pong0", scenarios.B)
    rows: dict[str, list[float]] = {k: [] for k in (*ERGO_PHASES, "pre-dial", "total")}
    cpu_a0, cpu_b0 = cpu_s(os.getpid()), cpu_s(b_pid)
    start = time.perf_counter()
    for i in range(n):
        stamps.marks.clear()
        t0 = time.perf_counter()
        a.network().disconnect(scenarios.B)
        t1 = time.perf_counter()
        a.call(pong, i, timeout=10)
        t2 = time.perf_counter()
        m = stamps.marks
        rows["close"].append(t1 - t0)
        rows["to loop"].append(m["to loop"] - t1)
        rows["pre-dial"].append(m["dial"] - m["to loop"])
        rows["TCP + TLS"].append(m["TCP + TLS"] - m["dial"])
        rows["handshake"].append(m["handshake"] - m["TCP + TLS"])
        rows["request"].append(t2 - m["handshake"])
        rows["total"].append(t2 - t0)
    elapsed = time.perf_counter() - start
    out = {k: statistics.median(v) * 1e6 for k, v in rows.items()}
    out["CPU a"] = (cpu_s(os.getpid()) - cpu_a0) / n * 1e6
    out["CPU b"] = (cpu_s(b_pid) - cpu_b0) / n * 1e6
    return out, n / elapsed


async def _raw_setups(port: int, ctx: ssl.SSLContext, n: int) -> tuple[dict[str, float], float]:
    loop = asyncio.get_running_loop()
    rows: dict[str, list[float]] = {k: [] for k in (*RAW_PHASES, "total")}
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as create_connection does
        await loop.sock_connect(sock, ("127.0.0.1", port))
        t1 = time.perf_counter()
        _, client = await loop.create_connection(
            baseline_tls._Client, sock=sock, ssl=ctx, server_hostname="127.0.0.1"
        )
        t2 = time.perf_counter()
        await client.request(["req", i])
        t3 = time.perf_counter()
        client.t.close()
        t4 = time.perf_counter()
        for k, v in zip(RAW_PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            rows[k].append(v)
        rows["total"].append(t4 - t0)
    elapsed = time.perf_counter() - start
    return {k: statistics.median(v) * 1e6 for k, v in rows.items()}, n / elapsed


def raw_round(
    port: int, ctx: ssl.SSLContext, n: int, srv_pid: int
) -> tuple[dict[str, float], float]:
    cpu_a0, cpu_b0 = cpu_s(os.getpid()), cpu_s(srv_pid)
    out, rate = asyncio.run(_raw_setups(port, ctx, n))
    out["CPU a"] = (cpu_s(os.getpid()) - cpu_a0) / n * 1e6
    out["CPU b"] = (cpu_s(srv_pid) - cpu_b0) / n * 1e6
    return out, rate


def _median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def _table(
    title: str, names: tuple[str, str], left: dict[str, float], right: dict[str, float]
) -> None:
    print(title)
    print(f"  {'phase':<14}{names[0]:>12}{names[1]:>12}")
    for k in dict.fromkeys([*ERGO_PHASES, "pre-dial", *RAW_PHASES, "total", "CPU a", "CPU b"]):
        if k in left or k in right:
            lv, rv = left.get(k), right.get(k)
            lt = f"{lv:>12.0f}" if lv is not None else f"{'':>12}"
            rt = f"{rv:>12.0f}" if rv is not None else f"{'':>12}"
            print(f"  {k:<14}{lt}{rt}")


def main(rounds: int = 6, n: int = 40, variant: str = "") -> None:
    """ergo_py against raw TLS; or, with ``variant``, ergo_py with it off against on."""
    ca = CertificateAuthority.create("setup phases CA")
    ca_pem = ca.to_pem()
    material = baseline_tls.TLSMaterial.issued_by(ca, scenarios.HOST)
    ctx = mp.get_context("spawn")
    port_q, raw_q = ctx.Queue(), ctx.Queue()
    stop_ev, raw_stop, off = ctx.Event(), ctx.Event(), ctx.Event()
    b = ctx.Process(target=_serve_b, args=(ca_pem, port_q, stop_ev, variant, off), daemon=True)
    raw = ctx.Process(target=baseline_tls._serve, args=(material, raw_q, raw_stop), daemon=True)
    b.start()
    raw.start()
    if variant:
        VARIANTS[variant](off.is_set)
    stamps = Stamps()
    sides: tuple[list[dict[str, float]], list[dict[str, float]]] = ([], [])
    rates: tuple[list[float], list[float]] = ([], [])
    try:
        port, raw_port = port_q.get(timeout=60), raw_q.get(timeout=60)
        raw_ctx = baseline_tls._context(material, server_side=False)
        a_name = f"a@{scenarios.HOST}"
        with ergo_py.start_node(a_name, scenarios.options(ca_pem, a_name)) as a:
            a.network().add_route("b@.*", gen.NetworkRoute(host=scenarios.HOST, port=port))
            stamps.install()
            ergo_round(a, stamps, 5, b.pid or 0)  # warm up both
            raw_round(raw_port, raw_ctx, 5, raw.pid or 0)
            for _ in range(rounds):
                for side in (0, 1):
                    if variant:
                        off.set() if side == 0 else off.clear()
                        row, rate = ergo_round(a, stamps, n, b.pid or 0)
                    elif side == 0:
                        row, rate = ergo_round(a, stamps, n, b.pid or 0)
                    else:
                        row, rate = raw_round(raw_port, raw_ctx, n, raw.pid or 0)
                    sides[side].append(row)
                    rates[side].append(rate)
            stamps.remove()
    finally:
        stop_ev.set()
        raw_stop.set()
        for p in (b, raw):
            p.join(15)
            if p.is_alive():
                p.kill()
    names = (f"{variant} off", f"{variant} on") if variant else ("ergo_py", "raw TLS")
    left, right = _median_of(sides[0]), _median_of(sides[1])
    _table(
        f"set-up phases, {rounds} alternating rounds of {n} set-ups (medians, µs)",
        names,
        left,
        right,
    )
    lr, rr = statistics.median(rates[0]), statistics.median(rates[1])
    print(f"set-ups/s: {names[0]} {lr:.0f}, {names[1]} {rr:.0f}, ratio {lr / rr:.2f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 6,
        int(args[1]) if len(args) > 1 else 40,
        args[2] if len(args) > 2 else "",
    )
