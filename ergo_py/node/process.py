"""The pykka actor that hosts one ``act.Actor``: one thread, one mailbox.

Everything a process receives is one of the envelopes below (or a
``gen.SendBatch``: a burst from one remote sender, as its link read it),
queued in its pykka inbox in arrival order (so one sender's messages, and
the exit or down that follows them, keep their order). Callbacks run one at
a time. Once the process ends, anything still queued is dropped; calls still
pending on it were failed by the core.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Protocol

import pykka

from ergo_py.act.actor import _NO_STOP, Actor
from ergo_py.gen.identifiers import PID, Ref
from ergo_py.gen.messages import TERMINATE_REASON_NORMAL
from ergo_py.gen.node import SendBatch

log = logging.getLogger(__name__)


class Deliver:
    """A message for ``handle_message`` (a plain slotted class: this is the hot path)."""

    __slots__ = ("message", "sender")

    def __init__(self, sender: PID, message: Any) -> None:
        self.sender = sender
        self.message = message


class Request:
    """A call for ``handle_call``; the core routes the result back to ``sender``."""

    __slots__ = ("ref", "request", "sender")

    def __init__(self, sender: PID, ref: Ref, request: Any) -> None:
        self.sender = sender
        self.ref = ref
        self.request = request


class Sends:
    """Messages that arrived together from the network for one process, as they came.

    ``items`` are the network layer's ``(from_, to, message)`` tuples, handed
    over untouched: one mailbox put for the burst and no envelope object per
    message (one pykka wake-up for all of them). Handled in order, each as a
    ``Deliver``; anything queued after it (an exit, a down) comes after all.
    """

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[PID, Any, Any]]) -> None:
        self.items = items


@dataclass(frozen=True, slots=True)
class ExitSignal:
    """End with ``reason``, or, when trapping exits, receive ``message`` instead.

    ``kill``: an explicit kill (``send_exit(pid, "kill")``), which cannot be
    trapped; an exit because a linked process was killed can be.
    """

    sender: Any
    message: Any
    reason: Any
    kill: bool = False


@dataclass(frozen=True, slots=True)
class Down:
    """A down message from a monitor: always delivered to ``handle_message``."""

    sender: Any
    message: Any


@dataclass(frozen=True, slots=True)
class Stop:
    """End with ``reason`` (the node is stopping)."""

    reason: Any


class ProcessState:
    """What the core keeps about one process; shared with its pykka actor."""

    __slots__ = (
        "_early",
        "_lock",
        "actor_ref",
        "aliases",
        "done",
        "init_error",
        "names",
        "pid",
        "started",
        "thread",
    )

    def __init__(self, pid: PID) -> None:
        self.pid = pid
        self.actor_ref: pykka.ActorRef[Any] | None = None
        # Envelopes sent before the pykka actor exists (the process is
        # reachable from the moment it has a PID, e.g. a send to itself in init).
        self._early: list[object] | None = []
        self._lock = threading.Lock()
        self.names: set[str] = set()
        self.aliases: set[Any] = set()
        self.started = threading.Event()
        self.done = threading.Event()
        self.init_error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def attach(self, ref: pykka.ActorRef[Any]) -> None:
        """The pykka actor is up: queue what came early, in order, then go direct."""
        with self._lock:
            early, self._early = self._early or [], None
            for envelope in early:
                ref.tell(envelope)
            self.actor_ref = ref

    def tell(self, envelope: object) -> bool:
        """Queue an envelope; False when the process has already gone."""
        ref = self.actor_ref
        if ref is None:
            with self._lock:
                ref = self.actor_ref
                if ref is None:
                    if self._early is None:
                        return False
                    self._early.append(envelope)
                    return True
        try:
            ref.tell(envelope)
        except pykka.ActorDeadError:
            return False
        return True


class ProcessOwner(Protocol):
    """What a process needs from its node (the node's core implements it).

    Both are called on the process's own thread.
    """

    def finish_call(self, callee: PID, caller: PID, ref: Ref, value: Any) -> None:
        """``handle_call`` of ``callee`` returned ``value`` for ``caller``'s call ``ref``."""

    def process_ended(self, state: ProcessState, reason: Any) -> None:
        """The process ended (``terminate`` has run): tell whoever must know."""


class ProcessActor(pykka.ThreadingActor):
    """Runs one ``act.Actor``'s callbacks on its own thread."""

    use_daemon_thread = True  # a callback stuck forever must not block interpreter exit

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        # pykka's default, queue.Queue, is a Python Condition around a deque:
        # a put and the wake-up of the blocked get cost about twice what the
        # C SimpleQueue costs, and every message to a process pays it.
        return queue.SimpleQueue()

    def __init__(
        self, owner: ProcessOwner, state: ProcessState, actor: Actor, args: tuple[Any, ...]
    ) -> None:
        super().__init__()
        self._owner = owner
        self._state = state
        self._actor = actor
        self._args = args
        self._dead = False

    def on_start(self) -> None:
        self._state.thread = threading.current_thread()
        try:
            self._actor.init(*self._args)
        except Exception as exc:
            self._state.init_error = exc
            self._state.started.set()
            self._finish(exc, run_terminate=False)
            return
        self._state.started.set()
        self._check_stop()

    def on_receive(self, message: Any) -> Any:
        if type(message) is SendBatch:
            self._handle_batch(message.sender, message.messages)
        elif type(message) is Sends:
            self._handle_sends(message.items)
        elif not self._dead:
            self._handle(message)
        return None

    def _handle(self, message: Any) -> None:
        """One envelope; ends the process when its callback says so or raises."""
        actor = self._actor
        try:
            if type(message) is Deliver:
                actor.handle_message(message.sender, message.message)
            elif type(message) is Request:
                value = actor.handle_call(message.sender, message.ref, message.request)
                self._owner.finish_call(self._state.pid, message.sender, message.ref, value)
            elif type(message) is ExitSignal:
                if actor.trap_exit and not message.kill:
                    actor.handle_message(message.sender, message.message)
                elif message.reason == TERMINATE_REASON_NORMAL and not message.kill:
                    pass  # as in Erlang: a normal exit does not end a process that does not trap
                else:
                    self._finish(message.reason)
                    return
            elif type(message) is Down:
                actor.handle_message(message.sender, message.message)
            elif type(message) is Stop:
                self._finish(message.reason)
                return
            else:
                log.warning("%r: unknown envelope %r dropped", self._state.pid, message)
        except Exception as exc:
            self._crashed(exc)
            return
        self._check_stop()

    def _handle_sends(self, items: list[tuple[PID, Any, Any]]) -> None:
        """``handle_message`` for each, as ``_handle`` does for a ``Deliver``."""
        self._handle_each((sender, message) for sender, _, message in items)

    def _handle_batch(self, sender: PID, messages: list[Any]) -> None:
        """``handle_message(sender, m)`` for each of a ``gen.SendBatch``'s, in order."""
        self._handle_each(zip(repeat(sender), messages))

    def _handle_each(self, pairs: Iterable[tuple[PID, Any]]) -> None:
        """``handle_message`` per (sender, message) in order, until one crashes or stops it."""
        handle = self._actor.handle_message
        for sender, message in pairs:
            if self._dead:
                return
            try:
                handle(sender, message)
            except Exception as exc:
                self._crashed(exc)
                return
            if self._actor._stop_reason is not _NO_STOP:  # _check_stop, without a call per message
                self._check_stop()

    def _crashed(self, exc: Exception) -> None:
        log.error("%r ended by an exception: %r", self._state.pid, exc, exc_info=True)
        self._finish(exc)

    def _check_stop(self) -> None:
        reason = self._actor._stop_reason
        if reason is not _NO_STOP and not self._dead:
            self._finish(reason)

    def _finish(self, reason: Any, run_terminate: bool = True) -> None:
        """End the process: ``terminate``, then the owner tells linkers and monitors."""
        self._dead = True
        if run_terminate:
            try:
                self._actor.terminate(reason)
            except Exception:
                log.exception("%r: terminate raised", self._state.pid)
        try:
            self._owner.process_ended(self._state, reason)
        finally:
            self.stop()
