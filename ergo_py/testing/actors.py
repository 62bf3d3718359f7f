"""Small actors for tests, benchmarks, examples and the demo.

They are module-level names, so a node in a child process
(:class:`~ergo_py.testing.ProcessNode`) can spawn them by reference: its
process imports this module by name. ``Sink`` and ``Watcher`` report to a
``queue.Queue`` given to ``init``, which lives in one process: spawn those on
nodes in the test's own process.
"""

from __future__ import annotations

import queue
from typing import Any

from ergo_py.act.actor import Actor
from ergo_py.gen.errors import ErrIncorrect
from ergo_py.gen.identifiers import PID, Ref
from ergo_py.gen.node import Target

__all__ = ["Echo", "Idle", "Pong", "Sink", "Watcher"]


class Pong(Actor):
    """Answers every call with ``("pong", request)``."""

    def handle_call(self, sender: PID, ref: Ref, request: Any) -> Any:
        return ("pong", request)


class Echo(Actor):
    """Answers every call with the request itself; the message ``"stop"`` ends it normally.

    Other messages are logged and dropped (``act.Actor``'s default).
    """

    def handle_message(self, sender: PID, message: Any) -> None:
        if message == "stop":
            self.stop()
        else:
            super().handle_message(sender, message)

    def handle_call(self, sender: PID, ref: Ref, request: Any) -> Any:
        return request


class Idle(Actor):
    """Does nothing: messages are dropped without a word (calls get ``None``, logged)."""

    def handle_message(self, sender: PID, message: Any) -> None:
        pass


class Sink(Actor):
    """Puts every message it receives (the message only, not its sender) on ``out``.

    ``spawn(Sink, out)``; ``out`` is a ``queue.Queue``, so in-process nodes only.
    """

    def init(self, out: queue.Queue[Any]) -> None:
        self.out = out

    def handle_message(self, sender: PID, message: Any) -> None:
        self.out.put(message)


class Watcher(Actor):
    """Watches ``target`` from ``init`` and puts every message it then receives on ``out``.

    ``spawn(Watcher, target, out, *how)``, ``how`` being ``"monitor"`` (the
    default when none is given) and/or ``"link"``, done in that order as
    given. A watcher that links traps exits, so the target's end arrives as a
    ``gen.MessageExit*`` message instead of ending the watcher; a monitor's
    arrives as ``gen.MessageDown*``. ``out`` is a ``queue.Queue``, so
    in-process nodes only.
    """

    def init(self, target: Target, out: queue.Queue[Any], *how: str) -> None:
        self.out = out
        how = how or ("monitor",)
        unknown = set(how) - {"link", "monitor"}
        if unknown:
            raise ErrIncorrect(f"Watcher: {sorted(unknown)} is not 'link' or 'monitor'")
        self.trap_exit = "link" in how
        for what in how:
            if what == "link":
                self.link(target)
            else:
                self.monitor(target)

    def handle_message(self, sender: PID, message: Any) -> None:
        self.out.put(message)
