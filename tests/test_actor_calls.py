"""Synchronous calls: replies, timeouts, late replies, callees that die."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
from conftest import Recorder, get

from ergo_py import act, gen


class Gate(act.Actor):
    """Answers a call only once the event given to init is set."""

    def init(self, gate: threading.Event) -> None:
        self.gate = gate

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        self.gate.wait(10)
        return ("answer", request)


class Crasher(act.Actor):
    def init(self, gate: threading.Event) -> None:
        self.gate = gate

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        self.gate.wait(10)
        raise RuntimeError("boom")


class Relay(act.Actor):
    """Calls the PID in the request and answers with what it got (or the error's class)."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        target, payload, timeout = request
        try:
            return self.call(target, payload, timeout=timeout)
        except gen.ErgoError as exc:
            return type(exc).__name__


def test_call_returns_the_handle_call_result(node: gen.Node) -> None:
    pid = node.spawn(Recorder, queue.Queue())
    assert node.call(pid, [1, "two"]) == ("ok", [1, "two"])


def test_call_between_actors(node: gen.Node) -> None:
    callee = node.spawn(Recorder, queue.Queue())
    relay = node.spawn(Relay)
    assert node.call(relay, (callee, "hi", 5.0)) == ("ok", "hi")


def test_call_times_out_with_err_timeout(node: gen.Node) -> None:
    gate = threading.Event()
    pid = node.spawn(Gate, gate)
    try:
        with pytest.raises(gen.ErrTimeout):
            node.call(pid, "x", timeout=0.05)
    finally:
        gate.set()


def test_late_reply_is_discarded_not_delivered_to_the_next_call(node: gen.Node) -> None:
    gate = threading.Event()
    pid = node.spawn(Gate, gate)
    with pytest.raises(gen.ErrTimeout):
        node.call(pid, "first", timeout=0.05)
    gate.set()
    assert node.call(pid, "second") == ("answer", "second")
    assert node.call(pid, "third") == ("answer", "third")


def test_callee_crashing_in_handle_call_fails_the_caller_at_once(node: gen.Node) -> None:
    gate = threading.Event()
    gate.set()
    pid = node.spawn(Crasher, gate)
    with pytest.raises(gen.ErrProcessTerminated, match="boom"):
        node.call(pid, "x", timeout=60)


def test_callee_dying_mid_call_fails_the_caller_fast(node: gen.Node) -> None:
    gate = threading.Event()
    pid = node.spawn(Crasher, gate)
    errors: queue.Queue[BaseException] = queue.Queue()

    def caller() -> None:
        try:
            node.call(pid, "x", timeout=60)
        except gen.ErgoError as exc:
            errors.put(exc)

    t = threading.Thread(target=caller)
    t.start()
    gate.set()
    assert isinstance(get(errors), gen.ErrProcessTerminated)
    t.join(5)


def test_call_queued_behind_a_stop_fails_with_process_terminated(node: gen.Node) -> None:
    pid = node.spawn(Recorder, queue.Queue())
    node.send(pid, "stop")
    with pytest.raises((gen.ErrProcessTerminated, gen.ErrProcessUnknown)):
        node.call(pid, "x", timeout=60)


def test_call_to_missing_process_fails_with_process_unknown(node: gen.Node) -> None:
    with pytest.raises(gen.ErrProcessUnknown):
        node.call(gen.PID(node.name, 424242, node.creation), "x", timeout=60)
    with pytest.raises(gen.ErrProcessUnknown):
        node.call("nobody", "x", timeout=60)


def test_call_to_another_node_without_network_raises_no_connection(node: gen.Node) -> None:
    with pytest.raises(gen.ErrNoConnection):
        node.call(gen.PID("other@localhost", 1000, 1), "x")


def test_actor_calling_itself_is_not_allowed(node: gen.Node) -> None:
    class Selfish(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            try:
                self.call(self.pid, "again")
            except gen.ErrNotAllowed:
                return "refused"
            return "called"

    pid = node.spawn(Selfish)
    assert node.call(pid, "x") == "refused"


def test_unencodable_reply_fails_the_caller_with_unsupported_type(node: gen.Node) -> None:
    class Bad(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            return {1, 2}

    pid = node.spawn(Bad)
    with pytest.raises(gen.ErrUnsupportedType):
        node.call(pid, "x")


def test_unencodable_request_raises_at_the_caller(node: gen.Node) -> None:
    pid = node.spawn(Recorder, queue.Queue())
    with pytest.raises(gen.ErrUnsupportedType):
        node.call(pid, object())


def test_handle_call_receives_sender_and_ref(node: gen.Node) -> None:
    seen: queue.Queue[Any] = queue.Queue()

    class Echo(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            seen.put((sender, ref))
            return None

    pid = node.spawn(Echo)
    assert node.call(pid, "x") is None
    sender, ref = get(seen)
    assert sender == node.pid
    assert isinstance(ref, gen.Ref) and ref.node == node.name
