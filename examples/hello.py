"""Actors that the example configs (``examples/a.toml``, ``examples/b.toml``) host.

``ergo-py node run`` imports them by ``factory = "hello:Greeter"``: the
configs put this directory on ``node.pythonpath``. ``args`` from the config
arrive in ``init``.
"""

from __future__ import annotations

from typing import Any

from ergo_py import act, gen


class Greeter(act.Actor):
    """Answers a call with a greeting; remembers what it was sent (call it with "seen")."""

    def init(self, greeting: str = "hello") -> None:
        self.greeting = greeting
        self.seen: list[Any] = []

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.seen.append(message)

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "seen":
            return self.seen
        return f"{self.greeting}, {request}, from {self.node.name}"


class Relay(act.Actor):
    """Passes each call on to a process on another node and answers with what it said."""

    def init(self, process: str, node: str) -> None:
        self.target = gen.ProcessID(process, node)

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        try:
            answer = self.call(self.target, request, timeout=5)
        except (gen.ErrNoConnection, gen.ErrTimeout) as exc:
            # Answered rather than raised: an exception would end this process
            # (logged at ERROR; later calls would get ErrProcessUnknown).
            return f"{self.node.name} cannot reach {self.target}: {exc}"
        return f"{self.node.name} relayed: {answer}"
