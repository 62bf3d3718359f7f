"""A graceful disconnect delivers the replies of calls in flight (bounded)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ergo_py import act, gen
from ergo_py.testing import Cluster

A, B = "a@127.0.0.1", "b@127.0.0.1"


@pytest.fixture
def nodes() -> Iterator[Cluster]:
    with Cluster(names=[A, B]) as cluster:
        yield cluster


class Slow(act.Actor):
    """Answers after ``delay`` seconds; tells the test when each call started."""

    def init(self, started: queue.Queue[Any], delay: float) -> None:
        self.started = started
        self.delay = delay

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        self.started.put(request)
        time.sleep(self.delay)
        return ("done", request)


def _call_in_thread(node: gen.Node, to: Any, request: Any) -> queue.Queue[Any]:
    result: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        began = time.monotonic()
        try:
            result.put((node.call(to, request, timeout=20), time.monotonic() - began))
        except gen.ErgoError as exc:
            result.put((exc, time.monotonic() - began))

    threading.Thread(target=run, daemon=True).start()
    return result


@pytest.mark.parametrize("closer", [A, B], ids=["caller-disconnects", "callee-disconnects"])
def test_a_call_in_flight_during_disconnect_gets_its_reply(nodes: Cluster, closer: str) -> None:
    started: queue.Queue[Any] = queue.Queue()
    for i in range(3):
        nodes[B].spawn_register(f"slow{i}", Slow, started, 1.0)
    results = [_call_in_thread(nodes[A], gen.ProcessID(f"slow{i}", B), i) for i in range(3)]
    for _ in range(3):
        started.get(timeout=5)  # every call is running on b
    other = B if closer == A else A
    nodes[closer].network().disconnect(other)
    for i, result in enumerate(results):
        value, _ = result.get(timeout=15)
        assert value == ("done", i)
    # A call made the moment the last reply is in may cross b's Close (it is
    # then failed honestly: it may have run); disconnect() on a returns once
    # the old connection is closed there too.
    nodes[A].network().disconnect(B)
    assert nodes[A].call(gen.ProcessID("slow0", B), "after", timeout=10) == ("done", "after")


def test_a_call_that_outlasts_the_reply_wait_fails_fast_and_says_so(nodes: Cluster) -> None:
    started: queue.Queue[Any] = queue.Queue()
    nodes[B].spawn_register("slow", Slow, started, 8.0)
    result = _call_in_thread(nodes[A], gen.ProcessID("slow", B), "long")
    started.get(timeout=5)
    began = time.monotonic()
    nodes[A].network().disconnect(B)
    error, _ = result.get(timeout=15)
    assert isinstance(error, gen.ErrNoConnection)
    # bounded by the reply wait (half the 5 s handshake timeout) plus the close itself
    assert time.monotonic() - began < 6.0
    nodes[B].spawn_register("quick", Slow, queue.Queue(), 0.0)
    assert nodes[A].call(gen.ProcessID("quick", B), "x", timeout=10) == ("done", "x")
