"""Links (one-way), monitors, exit signals and termination reasons."""

from __future__ import annotations

import queue
from typing import Any

from conftest import Recorder, get

from ergo_py import act, gen


class Watcher(act.Actor):
    """Links or monitors on request and reports everything it receives.

    Requests (calls): ("link", t), ("monitor", t), ("unlink", t), ("demonitor", ref),
    ("monitor_then_send", t, to, msg).
    """

    def init(self, out: queue.Queue[Any], trap_exit: bool = True) -> None:
        self.out = out
        self.trap_exit = trap_exit

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        op, arg = request
        if op == "link":
            self.link(arg)
        elif op == "unlink":
            self.unlink(arg)
        elif op == "monitor":
            return self.monitor(arg)
        elif op == "demonitor":
            return self.demonitor(arg)
        return None

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put((sender, message))

    def terminate(self, reason: Any) -> None:
        self.out.put(("terminate", reason))


def test_linker_gets_exit_when_target_ends_normally(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, queue.Queue())
    watcher = node.spawn(Watcher, out)
    node.call(watcher, ("link", target))
    node.send(target, "stop")
    assert get(out) == (target, gen.MessageExitPID(target, gen.TERMINATE_REASON_NORMAL))


def test_exit_terminates_a_linker_that_does_not_trap(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, queue.Queue())
    linker = node.spawn(Watcher, out, False)
    node.call(linker, ("link", target))
    node.send(target, "crash")
    tag, reason = get(out)
    assert tag == "terminate"
    assert isinstance(reason, RuntimeError)


def test_links_are_one_way(node: gen.Node) -> None:
    target_out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, target_out)
    linker = node.spawn(Watcher, queue.Queue(), False)
    node.call(linker, ("link", target))
    node.send(linker, "anything")
    node.send_exit(linker, gen.TERMINATE_REASON_SHUTDOWN)
    node.send(target, "still here")
    assert get(target_out) == (node.pid, "still here")


def test_unlink_stops_the_exit(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, queue.Queue())
    watcher = node.spawn(Watcher, out)
    node.call(watcher, ("link", target))
    node.call(watcher, ("unlink", target))
    ref = node.call(watcher, ("monitor", target))
    node.send(target, "stop")
    assert get(out) == (target, gen.MessageDownPID(target, ref, gen.TERMINATE_REASON_NORMAL))


def test_monitor_gets_down_with_ref_and_reason(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, queue.Queue())
    watcher = node.spawn(Watcher, out, False)
    ref = node.call(watcher, ("monitor", target))
    node.send(target, "crash")
    sender, down = get(out)
    assert sender == target
    assert isinstance(down, gen.MessageDownPID)
    assert (down.pid, down.ref) == (target, ref)
    assert isinstance(down.reason, RuntimeError) and str(down.reason) == "crash requested"


def test_demonitor_stops_the_down(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, queue.Queue())
    watcher = node.spawn(Watcher, out)
    ref = node.call(watcher, ("monitor", target))
    assert node.call(watcher, ("demonitor", ref)) is True
    assert node.call(watcher, ("demonitor", ref)) is False
    ref2 = node.call(watcher, ("monitor", target))
    node.send(target, "stop")
    assert get(out)[1].ref == ref2


def test_link_to_unknown_process_delivers_exit_at_once(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    watcher = node.spawn(Watcher, out)
    ghost = gen.PID(node.name, 777_777, node.creation)
    node.call(watcher, ("link", ghost))
    sender, exit_msg = get(out)
    assert sender == ghost
    assert isinstance(exit_msg.reason, gen.ErrProcessUnknown)


def test_monitor_of_unknown_process_delivers_down_at_once(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    watcher = node.spawn(Watcher, out)
    ghost = gen.PID(node.name, 777_778, node.creation)
    ref = node.call(watcher, ("monitor", ghost))
    _, down = get(out)
    assert down.ref == ref
    assert isinstance(down.reason, gen.ErrProcessUnknown)


def test_monitor_by_name_gets_down_process_id(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    node.spawn_register("named", Recorder, queue.Queue())
    watcher = node.spawn(Watcher, out)
    ref = node.call(watcher, ("monitor", "named"))
    node.send("named", "stop")
    _, down = get(out)
    pid_of_name = gen.ProcessID("named", node.name)
    assert down == gen.MessageDownProcessID(pid_of_name, ref, gen.TERMINATE_REASON_NORMAL)


def test_down_arrives_after_the_targets_earlier_messages(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    watcher = node.spawn(Watcher, out)

    class Chatty(act.Actor):
        def handle_message(self, sender: gen.PID, message: Any) -> None:
            for i in range(100):
                self.send(watcher, i)
            self.stop()

    chatty = node.spawn(Chatty)
    node.call(watcher, ("monitor", chatty))
    node.send(chatty, "go")
    got = [get(out)[1] for _ in range(101)]
    assert got[:100] == list(range(100))
    assert isinstance(got[100], gen.MessageDownPID)


def test_trapped_exit_signal_arrives_as_a_message(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    watcher = node.spawn(Watcher, out)
    node.send_exit(watcher, gen.TERMINATE_REASON_SHUTDOWN)
    assert get(out) == (node.pid, gen.MessageExitPID(node.pid, gen.TERMINATE_REASON_SHUTDOWN))


def test_kill_cannot_be_trapped(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    watcher = node.spawn(Watcher, out)
    node.send_exit(watcher, gen.TERMINATE_REASON_KILL)
    assert get(out) == ("terminate", gen.TERMINATE_REASON_KILL)


def test_link_parent_ends_the_child_with_its_parent(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()

    class Parent(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            return self.spawn(Recorder, out, options=gen.ProcessOptions(link_parent=True))

    parent = node.spawn(Parent)
    child = node.call(parent, "spawn")
    node.send_exit(parent, gen.TERMINATE_REASON_SHUTDOWN)
    assert get(out) == ("terminate", gen.TERMINATE_REASON_SHUTDOWN)
    with_pytest_raises_unknown(node, child)


def with_pytest_raises_unknown(node: gen.Node, pid: gen.PID) -> None:
    """``pid`` is gone: sends to it fail (the registry entry is removed at its end)."""
    try:
        node.send(pid, "x")
    except gen.ErrProcessUnknown:
        return
    raise AssertionError(f"{pid!r} is still alive")


def test_monitor_alias_gets_down_alias(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()

    class Aliased(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            return self.create_alias()

    target = node.spawn(Aliased)
    alias = node.call(target, "alias")
    watcher = node.spawn(Watcher, out)
    ref = node.call(watcher, ("monitor", alias))
    node.send_exit(target, gen.TERMINATE_REASON_SHUTDOWN)
    assert get(out)[1] == gen.MessageDownAlias(alias, ref, gen.TERMINATE_REASON_SHUTDOWN)


def test_exit_from_a_killed_linked_process_can_be_trapped(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, queue.Queue())
    watcher = node.spawn(Watcher, out)
    node.call(watcher, ("link", target))
    node.send_exit(target, gen.TERMINATE_REASON_KILL)
    assert get(out) == (target, gen.MessageExitPID(target, gen.TERMINATE_REASON_KILL))


def test_a_normal_exit_does_not_end_a_linker_that_does_not_trap(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    target = node.spawn(Recorder, queue.Queue())
    linker = node.spawn(Watcher, out, False)
    node.call(linker, ("link", target))
    node.send(target, "stop")
    node.send_exit(linker, gen.TERMINATE_REASON_NORMAL)
    node.send(linker, "still alive")
    assert get(out) == (node.pid, "still alive")
