"""The floor of ergo_py's call design, beside the raw TLS round trip, in one run.

A call in ergo_py crosses four thread hand-overs that a plain asyncio client
does not: caller thread -> loop of a, loop of b -> actor thread, actor thread
-> loop of b, loop of a -> caller thread. This script runs that skeleton and
nothing else (length-prefixed bare frames over mutual TLS, the server side on
its own loop thread handing each request to a worker thread through a
``SimpleQueue``, the reply written back with ``call_soon_threadsafe``; the
client calls from a plain thread and waits on a lock) against
``baseline_tls``'s raw request/response, both in the same round. It tells how
much of ergo_py's call latency the design itself costs and how much is the
runtime's own work (compare ``make bench``'s call p50).

Run: ``python benchmarks/call_floor.py [rounds]``. Uses uvloop when installed.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import statistics
import struct
import sys
import threading
import time
from _thread import allocate_lock
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import baseline_tls

from ergo_py.lib import CertificateAuthority
from ergo_py.net.loop import loop_kind, new_event_loop

_LEN = struct.Struct(">I")
HOST = "127.0.0.1"


class _Frames(asyncio.Protocol):
    """Splits length-prefixed frames; hands each to ``on_frame`` on the loop."""

    def __init__(self, on_frame: Any) -> None:
        self.buf = bytearray()
        self.on_frame = on_frame
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                return
            frame = bytes(self.buf[4 : 4 + n])
            del self.buf[: 4 + n]
            self.on_frame(self, frame)


def _serve(material: baseline_tls.TLSMaterial, port_q: Any, stop_ev: Any) -> None:
    """Loop thread reads requests; a worker thread answers them (the actor's place)."""
    ctx = baseline_tls._context(material, server_side=True)
    loop = new_event_loop(loop_kind())
    inbox: queue.SimpleQueue[tuple[_Frames, bytes]] = queue.SimpleQueue()

    def worker() -> None:
        while True:
            proto, frame = inbox.get()
            loop.call_soon_threadsafe(proto.transport.write, _LEN.pack(len(frame)) + frame)

    threading.Thread(target=worker, daemon=True).start()

    async def main() -> None:
        server = await loop.create_server(
            lambda: _Frames(lambda p, f: inbox.put((p, f))), HOST, 0, ssl=ctx
        )
        port_q.put(server.sockets[0].getsockname()[1])
        while not stop_ev.is_set():
            await asyncio.sleep(0.1)

    loop.run_until_complete(main())


def _skeleton_rtts(material: baseline_tls.TLSMaterial, port: int, n: int) -> list[float]:
    ctx = baseline_tls._context(material, server_side=False)
    loop = new_event_loop(loop_kind())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    slots: dict[bytes, Any] = {}

    def on_reply(_: _Frames, frame: bytes) -> None:
        slots.pop(frame).release()

    connect = loop.create_connection(
        lambda: _Frames(on_reply), HOST, port, ssl=ctx, server_hostname=HOST
    )
    _, proto = asyncio.run_coroutine_threadsafe(connect, loop).result(10)
    samples = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            done = allocate_lock()
            done.acquire()
            key = b"%d" % i
            slots[key] = done
            loop.call_soon_threadsafe(proto.transport.write, _LEN.pack(len(key)) + key)
            if not done.acquire(timeout=5):
                raise TimeoutError("no reply within 5 s")
            samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        loop.call_soon_threadsafe(proto.transport.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    return samples


def main(rounds: int = 3, calls: int = 2000) -> None:
    ca = CertificateAuthority.create("call floor CA")
    material = baseline_tls.TLSMaterial.issued_by(ca, HOST)
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    proc = ctx.Process(target=_serve, args=(material, port_q, stop_ev), daemon=True)
    proc.start()
    floor: list[float] = []
    raw: list[float] = []
    try:
        port = port_q.get(timeout=60)
        for _ in range(rounds):
            floor.append(statistics.median(_skeleton_rtts(material, port, calls)))
            r = baseline_tls.measure(material, messages=1000, rtts=calls, setups=5)
            raw.append(r.rtt_p50_us)
    finally:
        stop_ev.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    ratios = [f / r for f, r in zip(floor, raw, strict=True)]
    print(f"call floor of the design ({loop_kind()}), {rounds} rounds of {calls} calls")
    print(f"{'':24s} {'median':>8s}  per round")
    for label, values, fmt in (
        ("skeleton p50 (us)", floor, "{:.0f}"),
        ("raw TLS RTT p50 (us)", raw, "{:.0f}"),
        ("skeleton / raw", ratios, "{:.2f}"),
    ):
        cells = " ".join(fmt.format(v) for v in values)
        print(f"{label:24s} {fmt.format(statistics.median(values)):>8s}  {cells}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
