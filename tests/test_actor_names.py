"""Registered names and the actor-side API for them."""

from __future__ import annotations

import queue
from typing import Any

import pytest
from conftest import Recorder, get

from ergo_py import act, gen


def test_spawn_register_makes_the_name_resolve(node: gen.Node) -> None:
    pid = node.spawn_register("svc", Recorder, queue.Queue())
    assert node.where_is("svc") == pid


def test_spawn_register_with_a_taken_name_raises_taken(node: gen.Node) -> None:
    node.spawn_register("svc", Recorder, queue.Queue())
    with pytest.raises(gen.ErrTaken):
        node.spawn_register("svc", Recorder, queue.Queue())


def test_register_and_unregister_a_name(node: gen.Node) -> None:
    pid = node.spawn(Recorder, queue.Queue())
    node.register_name("later", pid)
    assert node.where_is("later") == pid
    assert node.unregister_name("later") == pid
    assert node.where_is("later") is None
    with pytest.raises(gen.ErrNameUnknown):
        node.unregister_name("later")


def test_register_a_taken_name_raises_taken(node: gen.Node) -> None:
    a = node.spawn(Recorder, queue.Queue())
    b = node.spawn(Recorder, queue.Queue())
    node.register_name("one", a)
    with pytest.raises(gen.ErrTaken):
        node.register_name("one", b)


def test_register_an_unknown_or_remote_pid_is_refused(node: gen.Node) -> None:
    with pytest.raises(gen.ErrProcessUnknown):
        node.register_name("x", gen.PID(node.name, 555_555, node.creation))
    with pytest.raises(gen.ErrNotAllowed):
        node.register_name("x", gen.PID("other@host", 1000, 1))


def test_empty_name_is_incorrect(node: gen.Node) -> None:
    with pytest.raises(gen.ErrIncorrect):
        node.spawn_register("", Recorder, queue.Queue())


def test_name_is_freed_when_the_process_ends(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    node.spawn_register("short", Recorder, out)
    node.send("short", "stop")
    assert get(out)[0] == "terminate"
    again = node.spawn_register("short", Recorder, queue.Queue())
    assert node.where_is("short") == again


def test_actor_registers_and_unregisters_its_own_name(node: gen.Node) -> None:
    class SelfNamer(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            op, name = request
            if op == "reg":
                self.register_name(name)
            else:
                try:
                    self.unregister_name(name)
                except gen.ErrNotAllowed:
                    return "not mine"
            return "done"

    pid = node.spawn(SelfNamer)
    other = node.spawn_register("theirs", Recorder, queue.Queue())
    assert node.call(pid, ("reg", "mine")) == "done"
    assert node.where_is("mine") == pid
    assert node.call(pid, ("unreg", "theirs")) == "not mine"
    assert node.where_is("theirs") == other
    assert node.call(pid, ("unreg", "mine")) == "done"
    assert node.where_is("mine") is None


def test_deleting_someone_elses_alias_is_incorrect(node: gen.Node) -> None:
    class Aliaser(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            if request == "make":
                return self.create_alias()
            try:
                self.delete_alias(request)
            except gen.ErrIncorrect:
                return "refused"
            return "deleted"

    a = node.spawn(Aliaser)
    b = node.spawn(Aliaser)
    alias = node.call(a, "make")
    assert node.call(b, alias) == "refused"
    assert node.call(a, alias) == "deleted"
