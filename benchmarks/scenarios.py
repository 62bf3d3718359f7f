"""ergo_py node-to-node scenarios over mutual TLS, node b in another OS process.

Node b (``serve``) runs in a spawned process with ``pong0..pong15`` (answer
calls) and ``sink0..sink3`` (count messages); node a runs in the benchmark
process. While ``rotate`` is set, b replaces its certificate through its
cert manager every 100 ms. A third process (``churn``) can dial b,
call once and disconnect in a loop, so new connections keep arriving.

Every certificate and key travels to the child processes through the
spawn pipe (in memory); nothing is written to disk.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ergo_py
from ergo_py import act, gen
from ergo_py.lib import CertificateAuthority
from ergo_py.testing import Echo

HOST = "127.0.0.1"
B = f"b@{HOST}"
MESSAGE = ("msg", 12345, b"x" * 32, {"k": 1})
PONGS = 16
SINKS = 4
ROTATE_EVERY_S = 0.1
CHURN_PAUSE_S = 0.1

CAPem = tuple[bytes, bytes]

# The churn loop makes and closes a connection ten times a second, each logged
# at INFO; a benchmark's output is its table. Warnings still show: a clean run
# has none. Set at import, so spawned children (which import this module to
# find their target) behave the same.
logging.getLogger("ergo_py").setLevel(logging.WARNING)


class Sink(act.Actor):
    """Counts messages; a ``"reset"`` call returns the count and zeroes it."""

    def init(self) -> None:
        self.count = 0

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.count += 1

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        n, self.count = self.count, 0
        return n


class Sender(act.Actor):
    """On a call ``(target, n)``, sends ``n`` messages to ``target`` (actor to actor)."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        target, n = request
        for _ in range(n):
            self.send(target, MESSAGE)
        return n


def options(
    ca_pem: CAPem, name: str, pool_size: int = gen.DEFAULT_POOL_SIZE, metrics: bool = False
) -> gen.NodeOptions:
    """mTLS node options with a certificate issued for ``name`` by the bench CA.

    ``metrics``: serve ``/metrics`` too (``options.metrics``, on a free port).
    """
    ca = CertificateAuthority.from_pem(*ca_pem)
    cam = gen.create_cert_auth_manager(ca.issue(name, hosts=(HOST,)))
    cam.set_client_cas(ca.pool())
    cam.set_root_cas(ca.pool())
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    opts = gen.NodeOptions(cert_manager=cam)
    opts.network.cookie = "bench"
    opts.network.registrar_enabled = False
    opts.network.pool_size = pool_size
    opts.network.acceptors = [gen.AcceptorOptions(host=HOST, port=0, port_range=1)]
    if metrics:
        opts.metrics = gen.MetricsOptions(host=HOST, port=0)
    return opts


def serve(
    ca_pem: CAPem,
    port_q: Any,
    stop_ev: Any,
    rotate_ev: Any,
    rotations: Any,
    freeze_ev: Any,
    frozen: Any,
    metrics: bool,
) -> None:
    """Node b's process: actors, and a rotation thread active while ``rotate_ev`` is set.

    While ``freeze_ev`` is set, the process's objects are in ``gc.freeze()``
    (``frozen`` says when that is done), for the row that measures it.
    """
    opts = options(ca_pem, B, metrics=metrics)
    ca = CertificateAuthority.from_pem(*ca_pem)
    cam = opts.cert_manager
    assert cam is not None
    with ergo_py.start_node(B, opts) as node:
        for i in range(PONGS):
            node.spawn_register(f"pong{i}", Echo)
        for i in range(SINKS):
            node.spawn_register(f"sink{i}", Sink)
        port_q.put(node.network().acceptors()[0].port)
        # Issue ahead: rotation should cost what update() costs, not certificate minting.
        spare = [ca.issue(B, hosts=(HOST,)) for _ in range(8)]
        i = 0
        while not stop_ev.is_set():
            if freeze_ev.is_set() != bool(frozen.value):
                if freeze_ev.is_set():
                    gc.freeze()
                else:
                    gc.unfreeze()
                frozen.value = int(freeze_ev.is_set())
            if rotate_ev.is_set():
                cam.update(spare[i % len(spare)])
                i += 1
                with rotations.get_lock():
                    rotations.value += 1
                time.sleep(ROTATE_EVERY_S)
            else:
                time.sleep(0.02)


def churn(ca_pem: CAPem, port: int, stop_ev: Any, counts: Any) -> None:
    """A second client: dial b, one call, disconnect, pause; counts (sent, replied)."""
    with ergo_py.start_node(f"c@{HOST}", options(ca_pem, f"c@{HOST}")) as c:
        c.network().add_route("b@.*", gen.NetworkRoute(host=HOST, port=port))
        pong = gen.ProcessID("pong0", B)
        while not stop_ev.is_set():
            with counts.get_lock():
                counts[0] += 1
            try:
                c.call(pong, 1, timeout=5)
                with counts.get_lock():
                    counts[1] += 1
            except gen.ErgoError:
                pass
            c.network().disconnect(B)
            time.sleep(CHURN_PAUSE_S)


@dataclass
class Server:
    port: int
    pid: int
    rotate_ev: Any
    rotations: Any
    ca_pem: CAPem
    freeze_ev: Any
    frozen: Any
    procs: list[Any] = field(default_factory=list)


@contextmanager
def server(ca_pem: CAPem, metrics: bool = False) -> Iterator[Server]:
    """Node b in a spawned process, for the duration of the block."""
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    rotate_ev = ctx.Event()
    rotations = ctx.Value("i", 0)
    freeze_ev = ctx.Event()
    frozen = ctx.Value("i", 0)
    args = (ca_pem, port_q, stop_ev, rotate_ev, rotations, freeze_ev, frozen, metrics)
    proc = ctx.Process(target=serve, args=args, daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=60)
        assert proc.pid is not None
        yield Server(port, proc.pid, rotate_ev, rotations, ca_pem, freeze_ev, frozen)
    finally:
        stop_ev.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()


@contextmanager
def frozen(srv: Server) -> Iterator[None]:
    """``gc.freeze()`` in this process and in b's for the block (then ``gc.unfreeze()``).

    What a long-running service does after start-up: the objects it made so
    far leave the collector's generations, so a full collection no longer
    walks them (see docs/perf-round2.md for what it changes).
    """
    srv.freeze_ev.set()
    deadline = time.monotonic() + 10
    while not srv.frozen.value and time.monotonic() < deadline:
        time.sleep(0.005)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        srv.freeze_ev.clear()
        while srv.frozen.value and time.monotonic() < deadline + 10:
            time.sleep(0.005)


@contextmanager
def client(srv: Server, name: str = f"a@{HOST}", metrics: bool = False) -> Iterator[gen.Node]:
    """Node a in this process, routed to b and connected."""
    with ergo_py.start_node(name, options(srv.ca_pem, name, metrics=metrics)) as a:
        a.network().add_route("b@.*", gen.NetworkRoute(host=HOST, port=srv.port))
        for i in range(PONGS):
            a.call(gen.ProcessID(f"pong{i}", B), 0, timeout=10)
        yield a


# -- measurements ------------------------------------------------------------


def one_way(a: gen.Node, senders: int, per_sender: int) -> float:
    """Messages/s from ``senders`` actors on a to as many sinks on b (delivered, counted)."""
    sinks = [gen.ProcessID(f"sink{i % SINKS}", B) for i in range(senders)]
    for s in set(sinks):
        a.call(s, "reset")
    pids = [a.spawn(Sender) for _ in range(senders)]
    start = time.perf_counter()
    threads = [
        threading.Thread(target=a.call, args=(pid, (sink, per_sender), 120))
        for pid, sink in zip(pids, sinks, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = senders * per_sender
    received = 0
    deadline = time.monotonic() + 120
    while received < expected and time.monotonic() < deadline:
        received += sum(a.call(s, "reset") for s in set(sinks))
    elapsed = time.perf_counter() - start
    for pid in pids:
        a.send_exit(pid, gen.TERMINATE_REASON_SHUTDOWN)
    if received != expected:
        raise RuntimeError(f"one-way: {received} of {expected} messages arrived")
    return expected / elapsed


@dataclass
class Calls:
    """The outcome of a timed stretch of calls."""

    sent: int
    replies: int
    elapsed: float
    samples_us: list[float]

    @property
    def per_s(self) -> float:
        return self.replies / self.elapsed

    @property
    def p50_us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def p99_us(self) -> float:
        return percentile(self.samples_us, 0.99)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_calls(call: Callable[[int, int], Any], callers: int, duration: float) -> Calls:
    """``callers`` threads calling ``call(caller_index, i)`` for ``duration`` seconds.

    Every exception counts as a lost request. Latency samples are kept for
    every call (all callers), so p50/p99 under concurrency include queueing.
    """
    sent = [0] * callers
    replies = [0] * callers
    samples: list[list[float]] = [[] for _ in range(callers)]
    go = threading.Barrier(callers + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        go.wait()
        i = 0
        mine = samples[k]
        while time.perf_counter() < deadline[0]:
            sent[k] += 1
            t0 = time.perf_counter()
            try:
                call(k, i)
            except Exception:
                continue
            mine.append((time.perf_counter() - t0) * 1e6)
            replies[k] += 1
            i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    deadline[0] = start + duration
    go.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return Calls(sum(sent), sum(replies), elapsed, [s for ss in samples for s in ss])


def ergo_calls(a: gen.Node, callers: int, duration: float) -> Calls:
    pongs = [gen.ProcessID(f"pong{k % PONGS}", B) for k in range(callers)]
    return timed_calls(lambda k, i: a.call(pongs[k], i, timeout=5), callers, duration)


def setups(a: gen.Node, n: int) -> float:
    """Dial + TLS + Ergo handshake (+ pool joins) + one call, per second."""
    pong = gen.ProcessID("pong0", B)
    start = time.perf_counter()
    for i in range(n):
        a.network().disconnect(B)
        a.call(pong, i, timeout=10)
    return n / (time.perf_counter() - start)


@dataclass
class Rotation:
    steady: Calls
    rotating_only: Calls  # rotation, no churn client: what rotation alone costs
    rotating: Calls  # rotation and the churn client
    rotations: int
    churn_sent: int
    churn_replies: int

    @property
    def sent(self) -> int:
        return self.rotating_only.sent + self.rotating.sent + self.churn_sent

    @property
    def replies(self) -> int:
        return self.rotating_only.replies + self.rotating.replies + self.churn_replies


def rotation(a: gen.Node, srv: Server, callers: int, duration: float) -> Rotation:
    """Calls/s steady; while b rotates every 100 ms; and while a churn client dials too."""
    steady = ergo_calls(a, callers, duration)
    with srv.rotations.get_lock():
        before = srv.rotations.value
    ctx = mp.get_context("spawn")
    stop_ev = ctx.Event()
    counts = ctx.Array("q", 2)
    proc = ctx.Process(target=churn, args=(srv.ca_pem, srv.port, stop_ev, counts), daemon=True)
    try:
        srv.rotate_ev.set()
        rotating_only = ergo_calls(a, callers, duration)
        proc.start()
        # Wait until the churn client is actually dialing before measuring.
        deadline = time.monotonic() + 60
        while counts[1] < 1 and time.monotonic() < deadline and proc.is_alive():
            time.sleep(0.02)
        with counts.get_lock():
            c0 = (counts[0], counts[1])
        rotating = ergo_calls(a, callers, duration)
        srv.rotate_ev.clear()
        stop_ev.set()
        proc.join(30)
        c1 = (counts[0], counts[1])
        with srv.rotations.get_lock():
            done = srv.rotations.value - before
    finally:
        srv.rotate_ev.clear()
        stop_ev.set()
        if proc.pid is not None:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
    return Rotation(steady, rotating_only, rotating, done, c1[0] - c0[0], c1[1] - c0[1])
