"""Stopping a node: terminate callbacks, idempotence, threads, bounded shutdown."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest
from conftest import Recorder, disabled_options, get, unique_node_name, wait_threads_gone

import ergo_py
from ergo_py import act, gen
from ergo_py.testing import Idle


class Sleeper(act.Actor):
    def init(self, release: threading.Event) -> None:
        self.release = release

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.release.wait(10)


def test_stop_runs_terminate_with_reason_shutdown(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    node.spawn(Recorder, q)
    node.stop()
    assert get(q) == ("terminate", gen.TERMINATE_REASON_SHUTDOWN)


def test_stop_is_idempotent(node: gen.Node) -> None:
    node.spawn(Idle)
    node.stop()
    node.stop()
    assert not node.is_alive()


def test_concurrent_stops_all_return() -> None:
    node = ergo_py.start_node(unique_node_name(), disabled_options())
    for _ in range(5):
        node.spawn(Idle)
    threads = [threading.Thread(target=node.stop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert node.wait(0)


def test_wait_blocks_until_stop(node: gen.Node) -> None:
    assert node.wait(0.01) is False
    threading.Timer(0.05, node.stop).start()
    assert node.wait(10) is True


def test_context_manager_stops_the_node() -> None:
    with ergo_py.start_node(unique_node_name(), disabled_options()) as node:
        node.spawn(Idle)
    assert node.wait(0)


def test_spawn_after_stop_raises_node_terminated(node: gen.Node) -> None:
    node.stop()
    with pytest.raises(gen.ErrNodeTerminated):
        node.spawn(Idle)


def test_a_thousand_processes_leave_no_threads() -> None:
    before = set(threading.enumerate())
    node = ergo_py.start_node(unique_node_name(), disabled_options())
    pids = [node.spawn(Idle) for _ in range(1000)]
    assert len(set(pids)) == 1000
    assert threading.active_count() >= len(before) + 1000
    node.stop()
    assert wait_threads_gone(before) == []


def test_stop_is_bounded_by_shutdown_timeout_for_a_stuck_process() -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    options = disabled_options(shutdown_timeout=0.2)
    node = ergo_py.start_node(unique_node_name(), options)
    pid = node.spawn(Sleeper, release)
    node.send(pid, "block")
    time.sleep(0.05)
    stopper = threading.Thread(target=node.stop)
    stopper.start()
    stopper.join(5)
    try:
        assert not stopper.is_alive()
        assert node.wait(0)
    finally:
        release.set()
    assert wait_threads_gone(before) == []


def test_outside_call_pending_at_stop_fails_with_node_terminated() -> None:
    release = threading.Event()
    node = ergo_py.start_node(unique_node_name(), disabled_options(shutdown_timeout=1.0))

    class Blocker(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            release.wait(10)
            return "late"

    pid = node.spawn(Blocker)
    errors: queue.Queue[BaseException] = queue.Queue()

    def caller() -> None:
        try:
            node.call(pid, "x", timeout=30)
        except gen.ErgoError as exc:
            errors.put(exc)

    t = threading.Thread(target=caller)
    t.start()
    time.sleep(0.05)
    stopper = threading.Thread(target=node.stop)
    stopper.start()
    try:
        assert isinstance(get(errors), gen.ErrNodeTerminated)
    finally:
        release.set()
        stopper.join(10)
        t.join(10)


def test_stop_from_inside_a_process_returns(node: gen.Node) -> None:
    class Stopper(act.Actor):
        def handle_message(self, sender: gen.PID, message: Any) -> None:
            self.node.stop()

    pid = node.spawn(Stopper)
    node.send(pid, "go")
    assert node.wait(10)


def test_send_and_call_after_stop_raise_node_terminated(node: gen.Node) -> None:
    pid = node.spawn(Idle)
    node.stop()
    with pytest.raises(gen.ErrNodeTerminated):
        node.send(pid, "x")
    with pytest.raises(gen.ErrNodeTerminated):
        node.call(pid, "x")
