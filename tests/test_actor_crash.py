"""Failures inside actors: the process ends, the node keeps running."""

from __future__ import annotations

import logging
import queue
from typing import Any

import pytest
from conftest import Recorder, get

from ergo_py import act, gen


class FailingInit(act.Actor):
    def init(self, *args: Any) -> None:
        raise ValueError("bad args")


def test_crashing_actor_does_not_take_the_node_down(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    node.send(pid, "crash")
    tag, reason = get(out)
    assert tag == "terminate" and isinstance(reason, RuntimeError)
    assert node.is_alive()
    other: queue.Queue[Any] = queue.Queue()
    survivor = node.spawn(Recorder, other)
    assert node.call(survivor, "ping") == ("ok", "ping")


def test_crashed_process_is_gone(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    node.send(pid, "crash")
    get(out)
    with pytest.raises(gen.ErrProcessUnknown):
        node.call(pid, "x")


def test_exception_in_init_is_raised_by_spawn(node: gen.Node) -> None:
    with pytest.raises(ValueError, match="bad args"):
        node.spawn(FailingInit)


def test_failed_spawn_releases_its_name(node: gen.Node) -> None:
    with pytest.raises(ValueError):
        node.spawn_register("maybe", FailingInit)
    assert node.where_is("maybe") is None


def test_factory_that_does_not_make_an_actor_is_incorrect(node: gen.Node) -> None:
    with pytest.raises(gen.ErrIncorrect):
        node.spawn(dict)  # type: ignore[arg-type]


def test_self_stop_ends_with_the_given_reason(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()

    class Quitter(act.Actor):
        def handle_message(self, sender: gen.PID, message: Any) -> None:
            self.stop(gen.Atom("done"))

        def terminate(self, reason: Any) -> None:
            out.put(reason)

    pid = node.spawn(Quitter)
    node.send(pid, "go")
    assert get(out) == "done"


def test_terminate_raising_still_ends_the_process(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()

    class BadTerminate(act.Actor):
        def terminate(self, reason: Any) -> None:
            raise RuntimeError("in terminate")

    pid = node.spawn(BadTerminate)

    class Monitor(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            return self.monitor(request)

        def handle_message(self, sender: gen.PID, message: Any) -> None:
            out.put(message)

    mon = node.spawn(Monitor)
    ref = node.call(mon, pid)
    node.send_exit(pid, gen.TERMINATE_REASON_SHUTDOWN)
    assert get(out) == gen.MessageDownPID(pid, ref, gen.TERMINATE_REASON_SHUTDOWN)


def test_actor_sees_its_env_and_parent(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()

    class EnvReader(act.Actor):
        def init(self) -> None:
            out.put((self.env, self.parent, self.node is not None))

    node.spawn(EnvReader, options=gen.ProcessOptions(env={"k": "v"}))
    assert get(out) == ({"k": "v"}, node.pid, True)


def test_a_crash_is_logged_at_error_with_its_traceback(
    node: gen.Node, caplog: pytest.LogCaptureFixture
) -> None:
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    with caplog.at_level(logging.INFO, logger="ergo_py.node.process"):
        node.send(pid, "crash")
        get(out)
    crashes = [r for r in caplog.records if "ended by an exception" in r.getMessage()]
    assert len(crashes) == 1
    assert crashes[0].levelno == logging.ERROR
    assert crashes[0].exc_info is not None and crashes[0].exc_info[0] is RuntimeError


def test_pythonic_aliases_are_the_ergo_errors() -> None:
    from ergo_py.gen.errors import PYTHONIC_NAMES

    ergo_names = {n for n in dir(gen) if n.startswith("Err") and isinstance(getattr(gen, n), type)}
    assert ergo_names == set(PYTHONIC_NAMES)  # every Err... has an alias
    for ergo, pythonic in PYTHONIC_NAMES.items():
        assert getattr(gen, pythonic) is getattr(gen, ergo) and pythonic.endswith("Error")
        assert pythonic in gen.__all__
    with pytest.raises(gen.NoConnectionError):
        raise gen.ErrNoConnection("gone")
