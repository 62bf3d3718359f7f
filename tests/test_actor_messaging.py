"""Sending messages between local processes."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import Recorder, get

from ergo_py import act, gen


@gen.register_type
@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass
class NotRegistered:
    x: int


class Burst(act.Actor):
    """On any message (a target PID), sends it 1..n in order."""

    def init(self, n: int) -> None:
        self.n = n

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        for i in range(self.n):
            self.send(message, i)


def test_message_reaches_handle_message_with_the_node_as_sender(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, q)
    node.send(pid, "hello")
    assert get(q) == (node.pid, "hello")


def test_messages_from_one_sender_arrive_in_order(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    receiver = node.spawn(Recorder, q)
    sender = node.spawn(Burst, 2000)
    node.send(sender, receiver)
    got = [get(q) for _ in range(2000)]
    assert [m for _, m in got] == list(range(2000))
    assert {s for s, _ in got} == {sender}


def test_receiver_gets_a_copy_not_the_senders_object(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, q)
    payload = {"items": [1, 2]}
    node.send(pid, payload)
    payload["items"].append(3)
    assert get(q)[1] == {"items": [1, 2]}


def test_identifiers_tuples_and_registered_dataclasses_cross(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, q)
    message = (pid, gen.Atom("a"), Point(1, 2), b"raw", None, 1.5)
    node.send(pid, message)
    assert get(q)[1] == message


def test_unencodable_message_raises_at_the_sender(node: gen.Node) -> None:
    pid = node.spawn(Recorder, queue.Queue())
    with pytest.raises(gen.ErrUnsupportedType):
        node.send(pid, NotRegistered(1))
    with pytest.raises(gen.ErrUnsupportedType):
        node.send(pid, {1, 2})


def test_send_to_unknown_local_process_raises_process_unknown(node: gen.Node) -> None:
    with pytest.raises(gen.ErrProcessUnknown):
        node.send(gen.PID(node.name, 999_999, node.creation), "x")
    with pytest.raises(gen.ErrProcessUnknown):
        node.send("nobody", "x")


def test_send_to_pid_of_an_earlier_incarnation_raises(node: gen.Node) -> None:
    pid = node.spawn(Recorder, queue.Queue())
    stale = gen.PID(node.name, pid.id, node.creation - 1)
    with pytest.raises(gen.ErrProcessIncarnation):
        node.send(stale, "x")


def test_send_by_name_and_by_process_id(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    node.spawn_register("rec", Recorder, q)
    node.send("rec", 1)
    node.send(gen.ProcessID("rec", node.name), 2)
    assert [get(q)[1], get(q)[1]] == [1, 2]


def test_send_to_another_node_without_network_raises_no_connection(node: gen.Node) -> None:
    with pytest.raises(gen.ErrNoConnection):
        node.send(gen.PID("other@localhost", 1000, 1), "x")
    with pytest.raises(gen.ErrNoConnection):
        node.send(gen.ProcessID("x", "other@localhost"), "x")


def test_send_to_a_bad_target_raises_incorrect(node: gen.Node) -> None:
    with pytest.raises(gen.ErrIncorrect):
        node.send(12, "x")  # type: ignore[arg-type]


def test_actor_sends_with_its_own_pid_as_sender(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    receiver = node.spawn(Recorder, q)
    sender = node.spawn(Burst, 1)
    node.send(sender, receiver)
    assert get(q) == (sender, 0)


def test_alias_routes_to_its_process_until_deleted(node: gen.Node) -> None:
    q: queue.Queue[Any] = queue.Queue()
    aliases: queue.Queue[Any] = queue.Queue()

    class Aliased(act.Actor):
        def handle_message(self, sender: gen.PID, message: Any) -> None:
            if message == "make":
                aliases.put(self.create_alias())
            elif isinstance(message, gen.Alias):
                self.delete_alias(message)
                aliases.put("deleted")
            else:
                q.put(message)

    pid = node.spawn(Aliased)
    node.send(pid, "make")
    alias = get(aliases)
    assert isinstance(alias, gen.Alias)
    node.send(alias, "via alias")
    assert get(q) == "via alias"
    node.send(pid, alias)
    assert get(aliases) == "deleted"
    with pytest.raises(gen.ErrProcessUnknown):
        node.send(alias, "gone")


class Kickoff(act.Actor):
    """Sends itself messages from init: they must not be lost before the mailbox exists."""

    def init(self, out: queue.Queue[Any]) -> None:
        self.out = out
        for i in range(3):
            self.send(self.pid, i)

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put(message)


def test_messages_a_process_sends_itself_in_init_arrive_in_order(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    node.spawn(Kickoff, out)
    assert [get(out) for _ in range(3)] == [0, 1, 2]
