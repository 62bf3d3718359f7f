"""What arrives from the network: the node's ``gen.NodeRouter``.

The network backend holds the ``Router`` and nothing else of the node. Every
method runs on a backend thread and returns quickly: it looks its target up
in the process table and queues an envelope in that process's mailbox, or
answers at once through the backend when the target is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ergo_py.gen.errors import (
    ErgoError,
    ErrNoConnection,
    ErrProcessIncarnation,
    ErrProcessUnknown,
)
from ergo_py.gen.identifiers import PID, Atom, Ref
from ergo_py.gen.messages import TERMINATE_REASON_KILL
from ergo_py.gen.node import NodeRouter, RemoteTarget, SendBatch, SpawnSpec
from ergo_py.node.calls import CallTable, Reply
from ergo_py.node.links import LinkTable
from ergo_py.node.process import Deliver, Down, ExitSignal, ProcessState, Request, Sends
from ergo_py.node.signals import Signals, down_message, exit_message
from ergo_py.node.table import ProcessTable, TableShortcuts

log = logging.getLogger(__name__)


class RouterOwner(Protocol):
    """What the router needs from the node's core."""

    @property
    def pid(self) -> PID:
        """The node's core process."""

    def spawn_from(self, parent: PID, spec: SpawnSpec) -> PID:
        """Start a local process on behalf of ``parent``."""

    def answer(
        self, callee: PID, caller: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        """Answer ``caller``'s call ``ref`` to ``callee``."""


class Router(TableShortcuts, NodeRouter):
    """The ``gen.NodeRouter`` the network backend calls; see there for each method."""

    def __init__(
        self,
        owner: RouterOwner,
        table: ProcessTable,
        links: LinkTable,
        calls: CallTable,
        signals: Signals,
    ) -> None:
        self._owner = owner
        self._pid = owner.pid
        self.observer: Any = None  # node/observe.py's Observer, set by the core
        self._use_table(table)
        self._links = links
        self._calls = calls
        self._signals = signals
        self._misdirected_from: set[Atom] = set()

    def __repr__(self) -> str:
        return f"<Router of {self._name}>"

    def route_spawn(self, parent: PID, spec: SpawnSpec) -> PID:
        return self._owner.spawn_from(parent, spec)

    def _recipient(self, to: RemoteTarget) -> ProcessState:
        """The local process ``to`` names (raises as ``ProcessTable.lookup``)."""
        to = self._norm(to)
        with self._lock:
            return self._lookup(to)

    def route_send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        self._recipient(to).tell(Deliver(from_pid, message))

    def route_sends(
        self, sends: Sequence[tuple[PID, RemoteTarget, Any]]
    ) -> list[tuple[int, ErgoError]]:
        """One table look-up per message under one lock; one mailbox put per recipient."""
        failed: list[tuple[int, ErgoError]] = []
        batches: dict[int, tuple[ProcessState, list[tuple[PID, RemoteTarget, Any]]]] = {}
        last_to: object = None
        envelopes: list[tuple[PID, RemoteTarget, Any]] = []
        with self._lock:
            for i, item in enumerate(sends):
                to = item[1]
                if to is not last_to:  # a burst is mostly one recipient (same decoded object)
                    try:
                        state = self._lookup(self._norm(to))
                    except ErgoError as exc:
                        failed.append((i, exc))
                        last_to = None
                        continue
                    last_to = to
                    entry = batches.get(id(state))
                    if entry is None:
                        envelopes = []
                        batches[id(state)] = (state, envelopes)
                    else:
                        envelopes = entry[1]
                envelopes.append(item)
        for state, envelopes in batches.values():
            state.tell(Sends(envelopes))
        return failed

    def route_batch(self, batch: SendBatch) -> None:
        """One table look-up; the batch itself goes into the mailbox (``ProcessActor``)."""
        self._recipient(batch.to).tell(batch)

    def route_call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        to = self._norm(to)
        try:
            with self._lock:
                state = self._lookup(to)
                self._inflight.setdefault(state.pid, {})[ref] = from_pid
        except (ErrProcessUnknown, ErrProcessIncarnation) as exc:
            self._owner.answer(self._pid, from_pid, ref, None, exc)
            return
        state.tell(Request(from_pid, ref, request))

    def route_reply(self, from_pid: PID, ref: Ref, value: Any, error: BaseException | None) -> bool:
        node = from_pid.node
        fate = self._calls.resolve_remote(ref, node, value, error)
        if fate is Reply.TAKEN:
            return True
        if fate is Reply.MISDIRECTED and node not in self._misdirected_from:
            self._misdirected_from.add(node)  # logged once per node: it may keep trying
            log.warning(
                "%s: refused a reply from %r to %r: the call was not made to %s "
                "(forged, or a broken peer); further ones from %s are counted, not logged",
                self._name,
                from_pid,
                ref,
                node,
                node,
            )
        return False

    def route_link(self, from_pid: PID, target: RemoteTarget) -> None:
        self._signals.link_local(from_pid, self._norm(target))

    def route_unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        self._links.remove_link(from_pid, target)

    def route_monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        self._signals.monitor_local(from_pid, self._norm(target), ref)

    def route_demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        self._links.remove_monitor(from_pid, ref)

    def route_exit(self, from_target: RemoteTarget, to: PID, reason: Any) -> None:
        linked = self._links.remove_link(to, from_target)
        kill = not linked and reason == TERMINATE_REASON_KILL
        state = self._local_state(to)
        if state is not None:
            message = exit_message(from_target, reason)
            state.tell(ExitSignal(from_target, message, reason, kill))

    def route_down(self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any) -> None:
        if self._links.take_monitor(from_target, ref) != to:
            return
        state = self._local_state(to)
        if state is not None:
            state.tell(Down(from_target, down_message(from_target, ref, reason)))

    def route_node_down(self, name: str, reason: Any = None) -> None:
        node = Atom(name)
        if reason is None:
            reason = ErrNoConnection(f"connection to {node} lost")
        for key in self._links.keys_on_node(node):
            self._signals.fire_target(key, reason)
        for holder in self._links.holders_on_node(node):
            self._links.take_holder(holder)
        self._calls.fail_node(
            node,
            ErrNoConnection(
                f"connection to {node} lost before the reply arrived "
                "(the request may have been processed there)"
            ),
        )
        with self._lock:
            for callee, pending in list(self._inflight.items()):
                for ref in [r for r, caller in pending.items() if caller.node == node]:
                    del pending[ref]
                if not pending:
                    del self._inflight[callee]
