"""Soak: three process nodes under sequenced traffic through rotations, cuts and a crash.

Three nodes, each in an OS process of its own (``Cluster(processes=True)``).
On every node a ``StreamRecorder`` (registered as ``"sink"``) records, per stream, the
sequence numbers it receives in arrival order; a ``Driver`` per (node, peer)
pair sends bursts of messages and a call to the peer's sink, each carrying
the stream's next sequence number, so all traffic crosses the node-to-node
mTLS connections. Meanwhile the test rotates every node's leaf certificate
with reconnect, replaces the CA, cuts links gracefully (``disconnect``) and
kills a node and starts it again under the same name.

At the end every stream is accounted for (see ``_account``): sent,
delivered, failed with a typed error (and whether the failed request ran
anyway), lost, lost to the crash, duplicated, reordered. Asserted: nothing
lost, duplicated or reordered, every failure raised within ``FAIL_BOUND``,
every event applied and every stream kept moving. Streams from or to a
killed incarnation lose what was in flight by nature (``lost_to_crash``, not
asserted), except what an answered call proves delivered.

About a minute; ``ERGO_PY_SOAK_SECONDS`` sets the traffic phase (default 45)
for longer local runs, which cycle through the events again (killing another
node each cycle). Marked ``slow``: ``make test`` runs it, ``pytest -m "not
slow"`` skips it locally; ``pytest -s tests/test_soak.py`` shows the report.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from ergo_py import act, gen
from ergo_py.testing import Cluster

SOAK_SECONDS = float(os.environ.get("ERGO_PY_SOAK_SECONDS", "45"))
NAMES = ["s1@127.0.0.1", "s2@127.0.0.1", "s3@127.0.0.1"]

CALL_TIMEOUT = 5.0  # every call a driver makes
FAIL_BOUND = CALL_TIMEOUT + 1.0  # "fast": any op that fails must have failed within this
SENDS_PER_CALL = 3  # a driver's stream: 3 sends, 1 call, 3 sends, 1 call, ...
TICK_PAUSE = 0.01  # between a driver's rounds (keeps CPU modest on a shared machine)
CONTROL_TIMEOUT = 2 * CALL_TIMEOUT + 10.0  # a driver answers between two rounds
PROGRESS = 10  # answered ops every live stream must add after each event ...
STALL_BOUND = 20.0  # ... within this many seconds
EVENT_GAP = 3.0  # seconds between events (about)


# ---------------------------------------------------------------------------
# actors (module level: the child processes import them by name)


class StreamRecorder(act.Actor):
    """Records every ``("op", stream, seq)`` message or call, in arrival order, by stream.

    A call is answered with its sequence number; ``"report"`` returns the records.
    """

    def init(self) -> None:
        self.streams: dict[str, list[int]] = {}

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        _, stream, seq = message
        self.streams.setdefault(stream, []).append(seq)

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "report":
            return self.streams
        _, stream, seq = request
        self.streams.setdefault(stream, []).append(seq)
        return seq


class Driver(act.Actor):
    """Feeds one stream to ``peer``'s sink, round after round, until stopped.

    Each op carries the stream's next sequence number: ``SENDS_PER_CALL``
    sends then one call (timeout ``CALL_TIMEOUT``), then a short pause. An op
    raising a ``gen.ErgoError`` is recorded as a failure (seq, kind, error,
    seconds it took, when) and the stream moves on. Calls: ``"progress"``
    (answered ops so far), ``"report"``, ``("stop", fence)``: no more rounds;
    with ``fence`` a final call (retried a few times) proves that everything
    sent before it has arrived; then the report.
    """

    def init(self, stream: str, peer: str) -> None:
        self.stream = stream
        self.target = gen.ProcessID("sink", peer)
        self.next = 0
        self.sent = {"send": 0, "call": 0}
        self.failures: list[tuple[int, str, str, float, float]] = []
        self.last_ok_call = -1
        self.slowest_ok = (0.0, -1)  # seconds, seq
        self.stopped = False
        self.send(self.pid, "tick")

    def op(self, kind: str) -> bool:
        seq = self.next
        self.next += 1
        self.sent[kind] += 1
        message = ("op", self.stream, seq)
        start = time.monotonic()
        try:
            if kind == "call":
                reply = self.call(self.target, message, timeout=CALL_TIMEOUT)
                if reply != seq:
                    raise gen.ErrIncorrect(f"reply {reply!r} to {seq}")
                self.last_ok_call = seq
            else:
                self.send(self.target, message)
        except gen.ErgoError as exc:
            end = time.monotonic()
            self.failures.append((seq, kind, type(exc).__name__, end - start, end))
            return False
        took = time.monotonic() - start
        if took > self.slowest_ok[0]:
            self.slowest_ok = (took, seq)
        return True

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        if message != "tick" or self.stopped:
            return
        ok = all([self.op("send") for _ in range(SENDS_PER_CALL)]) & self.op("call")
        time.sleep(TICK_PAUSE if ok else 5 * TICK_PAUSE)  # no busy loop on a dead peer
        self.send(self.pid, "tick")

    def report(self) -> dict[str, Any]:
        return {
            "next": self.next,
            "sent": dict(self.sent),
            "failures": list(self.failures),
            "last_ok_call": self.last_ok_call,
            "slowest_ok": self.slowest_ok,
        }

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "progress":
            return self.next - len(self.failures)
        if request == "report":
            return self.report()
        _, fence = request  # ("stop", fence)
        self.stopped = True
        for _ in range(5 if fence else 0):
            if self.op("call"):
                break
            time.sleep(0.2)
        return self.report()


# ---------------------------------------------------------------------------
# the run


@dataclasses.dataclass
class Stream:
    src: str  # node name
    dst: str
    src_inc: str  # incarnation label, "s1@127.0.0.1#0"
    dst_inc: str
    pid: gen.PID | None = None  # the driver, while it runs
    mark: dict[str, Any] | None = None  # driver report before a crash snapshot
    final: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.src_inc}>{self.dst_inc}"


@dataclasses.dataclass
class Event:
    at: float  # monotonic, shared by all processes on the host
    what: str
    took: float = 0.0
    error: str = ""


class Soak:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.incarnation = dict.fromkeys(NAMES, 0)
        self.streams: list[Stream] = []
        self.sinks: dict[str, dict[str, list[int]]] = {}  # incarnation -> its sink's records
        self.crashed: set[str] = set()
        self.events: list[Event] = []
        self.stalls: list[str] = []
        self.aborted = ""

    def inc(self, name: str) -> str:
        return f"{name}#{self.incarnation[name]}"

    def live(self) -> list[Stream]:
        return [s for s in self.streams if s.pid is not None]

    # -- actors

    def start_sink(self, name: str) -> None:
        self.cluster[name].spawn_register("sink", StreamRecorder)

    def start_driver(self, src: str, dst: str) -> None:
        stream = Stream(src, dst, self.inc(src), self.inc(dst))
        stream.pid = self.cluster[src].spawn(Driver, stream.key, dst)
        self.streams.append(stream)

    def driver_call(self, stream: Stream, request: Any) -> Any:
        assert stream.pid is not None
        return self.cluster[stream.src].call(stream.pid, request, timeout=CONTROL_TIMEOUT)

    def stop_driver(self, stream: Stream, fence: bool) -> None:
        stream.final = self.driver_call(stream, ("stop", fence))
        stream.pid = None

    def sink_report(self, name: str) -> dict[str, list[int]]:
        records: dict[str, list[int]] = self.cluster[name].call(
            gen.ProcessID("sink", name), "report", timeout=CONTROL_TIMEOUT
        )
        return records

    # -- pacing

    def progress(self) -> dict[str, int]:
        return {s.key: self.driver_call(s, "progress") for s in self.live()}

    def wait_progress(self, after: str, at_least: int = PROGRESS) -> None:
        """Every live stream answers ``at_least`` more ops (bounded), else a stall is noted."""
        start = self.progress()
        deadline = time.monotonic() + STALL_BOUND
        while True:
            now = self.progress()
            behind = {
                k: now[k] - start.get(k, 0) for k in now if now[k] - start.get(k, 0) < at_least
            }
            if not behind:
                return
            if time.monotonic() > deadline:
                self.stalls.append(f"after {after}: {behind} within {STALL_BOUND} s")
                return
            time.sleep(0.1)

    def event(self, what: str, action: Callable[[], None]) -> None:
        ev = Event(time.monotonic(), what)
        self.events.append(ev)
        try:
            action()
        except gen.ErgoError as exc:
            ev.error = f"{type(exc).__name__}: {exc}"
        ev.took = time.monotonic() - ev.at
        self.wait_progress(what)

    # -- events

    def rotate(self, name: str) -> None:
        self.event(f"rotate {name} + reconnect", lambda: self.cluster.rotate(name, reconnect=True))

    def rotate_ca(self) -> None:
        self.event("CA rotation", lambda: self.cluster.rotate_ca())

    def cut(self, a: str, b: str) -> None:
        self.event(f"cut {a} -> {b}", lambda: self.cluster[a].network().disconnect(b))

    def kill_and_restart(self, victim: str) -> None:
        """Snapshot the victim's streams, SIGKILL it under traffic, start it again."""
        v_inc = self.inc(victim)
        to_victim = [s for s in self.live() if s.dst == victim]
        from_victim = [s for s in self.live() if s.src == victim]
        # Ops answered before these marks must be in the sink snapshot taken next.
        for s in to_victim:
            s.mark = self.driver_call(s, "report")
        self.sinks[v_inc] = self.sink_report(victim)
        for s in from_victim:
            s.mark = s.final = self.driver_call(s, "report")

        def kill() -> None:
            self.cluster.kill(victim)
            self.crashed.add(v_inc)
            for s in from_victim:
                s.pid = None
            time.sleep(1.0)  # peers keep sending to the dead node: every op must fail fast
            for s in to_victim:
                self.stop_driver(s, fence=False)

        self.event(f"kill {victim}", kill)

        def restart() -> None:
            self.incarnation[victim] += 1
            self.cluster.start(victim, process=True)
            self.start_sink(victim)
            for peer in NAMES:
                if peer != victim:
                    self.start_driver(victim, peer)
                    self.start_driver(peer, victim)

        self.event(f"restart {victim}", restart)

    def schedule(self, cycle: int) -> list[Callable[[], None]]:
        s1, s2, s3 = (NAMES[(i - cycle) % 3] for i in range(3))  # cycle 0 kills s3
        return [
            lambda: self.rotate(s1),
            lambda: self.cut(s1, s2),
            lambda: self.rotate(s2),
            lambda: self.cut(s2, s3),
            self.rotate_ca,
            lambda: self.rotate(s3),
            lambda: self.cut(s3, s1),
            lambda: self.kill_and_restart(s3),
            lambda: self.rotate(s3),
            lambda: self.cut(s1, s3),
            lambda: self.rotate(s1),
            lambda: self.cut(s2, s1),
        ]

    def run(self, seconds: float) -> None:
        for name in NAMES:
            self.start_sink(name)
        for src in NAMES:
            for dst in NAMES:
                if src != dst:
                    self.start_driver(src, dst)
        self.wait_progress("start", at_least=3 * PROGRESS)
        begin = time.monotonic()
        end = begin + seconds
        cycle = 0
        while time.monotonic() < end:
            for step in self.schedule(cycle):
                due = self.events[-1].at + EVENT_GAP if self.events else begin + EVENT_GAP
                time.sleep(max(0.0, min(due, end) - time.monotonic()))
                if time.monotonic() >= end and cycle > 0:
                    break
                step()
            cycle += 1
        time.sleep(max(0.0, end - time.monotonic()))
        for s in self.live():
            self.stop_driver(s, fence=True)
        for name in NAMES:
            self.sinks[self.inc(name)] = self.sink_report(name)


# ---------------------------------------------------------------------------
# accounting


@dataclasses.dataclass
class Tally:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    failed_but_ran: int = 0
    lost: int = 0
    lost_to_crash: int = 0
    duplicated: int = 0
    reordered: int = 0
    phantom: int = 0  # received, but never sent (a sender that ran to the end)
    slowest_failure: float = 0.0
    slowest_ok: float = 0.0

    def add(self, other: Tally) -> None:
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(a, b) if f.name.startswith("slowest") else a + b)


def _account(soak: Soak, stream: Stream, problems: list[str]) -> Tally:
    report = stream.final
    assert report is not None, stream.key
    received = soak.sinks.get(stream.dst_inc, {}).get(stream.key, [])
    failed = {f[0]: f for f in report["failures"]}
    crash = stream.src_inc in soak.crashed or stream.dst_inc in soak.crashed
    t = Tally(
        sent=report["next"],
        delivered=len(set(received)),
        failed=len(failed),
        slowest_failure=max((f[3] for f in failed.values()), default=0.0),
        slowest_ok=report["slowest_ok"][0],
    )
    seen: set[int] = set()
    highest = -1
    for seq in received:
        if seq in seen:
            t.duplicated += 1
            problems.append(f"{stream.key}: seq {seq} received twice")
        elif seq < highest:
            t.reordered += 1
            problems.append(f"{stream.key}: seq {seq} received after {highest}")
        seen.add(seq)
        highest = max(highest, seq)
    t.failed_but_ran = sum(1 for seq in failed if seq in seen)
    if stream.src_inc not in soak.crashed:
        t.phantom = sum(1 for seq in seen if seq >= report["next"])
        if t.phantom:
            problems.append(f"{stream.key}: {t.phantom} seqs received that were never sent")
    # What must have arrived: every op that did not fail; in a stream from or to
    # a killed incarnation only up to its last call answered before the snapshot
    # (an answer proves the call arrived, and, in order, all before it).
    must = report["next"] if not crash else (stream.mark or report)["last_ok_call"] + 1
    for seq in range(report["next"]):
        if seq in failed or seq in seen:
            continue
        if seq < must:
            t.lost += 1
            if t.lost <= 5:
                problems.append(f"{stream.key}: seq {seq} succeeded at the sender, never received")
        else:
            t.lost_to_crash += 1
    return t


def _event_of(soak: Soak, at: float) -> tuple[int, str]:
    """The last event begun at ``at`` (index and description)."""
    found = (-1, "start")
    for i, ev in enumerate(soak.events):
        if ev.at <= at:
            found = (i, ev.what)
    return found


def _report(soak: Soak) -> tuple[str, Tally, list[str]]:
    problems: list[str] = []
    total = Tally()
    cols = [f.name for f in dataclasses.fields(Tally)]
    heads = [
        "sent",
        "deliv",
        "failed",
        "f_ran",
        "lost",
        "crash",
        "dup",
        "reord",
        "phant",
        "slow_f",
        "slow_ok",
    ]
    width = max(len(s.key) for s in soak.streams) + 2
    lines = ["stream".ljust(width) + "".join(h.rjust(8) for h in heads)]

    def row(label: str, t: Tally) -> str:
        cells = [
            f"{getattr(t, c):.2f}" if c.startswith("slowest") else str(getattr(t, c)) for c in cols
        ]
        return label.ljust(width) + "".join(c.rjust(8) for c in cells)

    for stream in soak.streams:
        if stream.final is None:  # only after an aborted run
            lines.append(f"{stream.key.ljust(width)}  no final report")
            continue
        t = _account(soak, stream, problems)
        total.add(t)
        lines.append(row(stream.key, t))
    lines.append(row("total", total))
    lines.append(
        "(deliv: distinct seqs received; f_ran: failed at the sender but ran; crash: "
        "lost_to_crash, in flight to or from a killed incarnation; slow_f / slow_ok: "
        "slowest failure / success, s; a killed sender's sent is what it reported before the "
        "kill, so deliv may exceed it)"
    )
    by_event: collections.Counter[tuple[tuple[int, str], str, str, bool]] = collections.Counter()
    worst = (0.0, "")
    for st in soak.streams:
        ran = set(soak.sinks.get(st.dst_inc, {}).get(st.key, []))
        for seq, kind, error, took, at in (st.final or {"failures": []})["failures"]:
            event = _event_of(soak, at)
            by_event[(event, kind, error, seq in ran)] += 1
            if took > worst[0]:
                worst = (took, f"{st.key} seq {seq} ({kind}, {error}, after {event[1]})")
            if took >= FAIL_BOUND:
                problems.append(f"{st.key} seq {seq}: {kind} failed after {took:.2f} s ({error})")
    lines.append(f"slowest failure: {worst[0]:.3f} s {worst[1]}")
    lines.append("failures by the event before them:")
    for ((_, what), kind, error, did_run), n in sorted(by_event.items()):
        lines.append(f"  {what}: {n} x {kind} {error}{' (ran at the callee)' if did_run else ''}")
    lines.append("events:")
    for ev in soak.events:
        lines.append(f"  {ev.what} ({ev.took:.2f} s){' ERROR ' + ev.error if ev.error else ''}")
        if ev.error:
            problems.append(f"event {ev.what} failed: {ev.error}")
    for stall in soak.stalls:
        lines.append(f"stall {stall}")
        problems.append(f"stall {stall}")
    if soak.aborted:
        lines.append(f"run aborted: {soak.aborted}")
        problems.append(f"run aborted (accounting above is partial): {soak.aborted}")
    return "\n".join(lines), total, problems


@pytest.mark.slow
@pytest.mark.timeout(max(240, int(3 * SOAK_SECONDS) + 120))
def test_soak_three_process_nodes_lose_nothing() -> None:
    started = time.monotonic()
    with Cluster(names=NAMES, processes=True, cookie="soak") as cluster:
        soak = Soak(cluster)
        try:
            soak.run(SOAK_SECONDS)
        except gen.ErgoError as exc:  # a control request failed or timed out: report, then fail
            soak.aborted = "".join(traceback.format_exception(exc))
    text, total, problems = _report(soak)
    text += f"\nwall time {time.monotonic() - started:.1f} s (traffic {SOAK_SECONDS:.0f} s)"
    print("\n" + text)
    assert total.sent > 0 and total.delivered > 0
    assert total.lost == 0 and total.duplicated == 0 and total.reordered == 0, text
    assert total.phantom == 0, text
    assert problems == [], "\n".join(problems) + "\n\n" + text
