"""Exit and down signals: telling linkers and monitors that a target ended.

The ``LinkTable`` records who links and monitors what; ``Signals`` delivers.
A holder on this node gets an ``ExitSignal`` / ``Down`` envelope queued behind
what its mailbox already holds; a holder on another node gets it through the
network backend, with ``ended`` (the process that ended, when known) so it
queues behind that process's messages there too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ergo_py.gen.errors import ErgoError, ErrProcessIncarnation, ErrProcessUnknown
from ergo_py.gen.identifiers import PID, Alias, Ref
from ergo_py.gen.messages import (
    MessageDownAlias,
    MessageDownNode,
    MessageDownPID,
    MessageDownProcessID,
    MessageExitAlias,
    MessageExitNode,
    MessageExitPID,
    MessageExitProcessID,
)
from ergo_py.gen.node import NetworkBackend, RemoteTarget
from ergo_py.node.links import Key, LinkTable, NodeKey
from ergo_py.node.process import Down, ExitSignal
from ergo_py.node.table import ProcessTable

log = logging.getLogger(__name__)


def exit_message(key: Key, reason: Any) -> Any:
    """What a process trapping exits receives when ``key`` ended."""
    if isinstance(key, NodeKey):
        return MessageExitNode(key.name)
    if isinstance(key, Alias):
        return MessageExitAlias(key, reason)
    if isinstance(key, PID):
        return MessageExitPID(key, reason)
    return MessageExitProcessID(key, reason)


def down_message(key: Key, ref: Ref, reason: Any) -> Any:
    """What the holder of monitor ``ref`` receives when ``key`` ended."""
    if isinstance(key, NodeKey):
        return MessageDownNode(key.name, ref)
    if isinstance(key, Alias):
        return MessageDownAlias(key, ref, reason)
    if isinstance(key, PID):
        return MessageDownPID(key, ref, reason)
    return MessageDownProcessID(key, ref, reason)


def quiet(method: Callable[..., None], *args: Any) -> None:
    """Call a backend method whose failure nobody could act on (logged at debug)."""
    try:
        method(*args)
    except ErgoError:
        log.debug("%s%r failed", getattr(method, "__name__", method), args, exc_info=True)


class Signals:
    """Delivers exits and downs, locally or through the backend.

    ``backend`` is set by the core once the backend exists (the backend is
    made with the router, which needs this object first).
    """

    backend: NetworkBackend

    def __init__(self, table: ProcessTable, links: LinkTable) -> None:
        self._table = table
        self._name = table.name
        self._links = links

    def link_local(self, holder: PID, key: RemoteTarget) -> None:
        """``holder`` links ``key``, on this node: recorded, or the exit fires at once.

        The record is made under the table's lock once ``key`` is found alive,
        so its end cannot slip between the check and the record.
        """
        try:
            with self._table.lock:
                self._table.lookup(key)
                self._links.add_link(holder, key)
        except (ErrProcessUnknown, ErrProcessIncarnation):
            self.fire_exit(holder, key, ErrProcessUnknown(f"no process {key!r}"))

    def monitor_local(self, holder: PID, key: RemoteTarget, ref: Ref) -> None:
        """``holder`` monitors ``key``, on this node: as ``link_local``, with a down."""
        try:
            with self._table.lock:
                self._table.lookup(key)
                self._links.add_monitor(holder, key, ref)
        except (ErrProcessUnknown, ErrProcessIncarnation):
            self.fire_down(holder, key, ref, ErrProcessUnknown(f"no process {key!r}"))

    def fire_exit(self, holder: PID, key: Key, reason: Any, ended: PID | None = None) -> None:
        """``holder`` linked ``key``, which ended (or never existed) with ``reason``."""
        if holder.node != self._name:
            if not isinstance(key, NodeKey):
                quiet(self.backend.exit, key, holder, reason, ended)
            return
        state = self._table.local_state(holder)
        if state is not None:
            state.tell(ExitSignal(key, exit_message(key, reason), reason))

    def fire_down(
        self, holder: PID, key: Key, ref: Ref, reason: Any, ended: PID | None = None
    ) -> None:
        """``holder``'s monitor ``ref`` on ``key`` fires with ``reason``."""
        if holder.node != self._name:
            if not isinstance(key, NodeKey):
                quiet(self.backend.down, key, holder, ref, reason, ended)
            return
        state = self._table.local_state(holder)
        if state is not None:
            state.tell(Down(key, down_message(key, ref, reason)))

    def fire_target(self, key: Key, reason: Any, ended: PID | None = None) -> None:
        """``key`` ended: every link and monitor on it fires, once, and is forgotten."""
        linkers, monitors = self._links.take_target(key)
        for holder in linkers:
            self.fire_exit(holder, key, reason, ended)
        for ref, holder in monitors:
            self.fire_down(holder, key, ref, reason, ended)

    def process_ended(self, pid: PID, keys: list[Key], reason: Any) -> None:
        """Local process ``pid``, known as ``keys`` (its PID, names, aliases), ended.

        Its linkers and monitors are told; the links and monitors it held
        itself are dropped, and their remote targets' nodes asked to forget them.
        """
        for key in keys:
            self.fire_target(key, reason, ended=pid)
        held, held_mons = self._links.take_holder(pid)
        for key in held:
            if not isinstance(key, NodeKey) and not self._table.is_local(key):
                quiet(self.backend.unlink, pid, key)
        for ref, key in held_mons:
            if not isinstance(key, NodeKey) and not self._table.is_local(key):
                quiet(self.backend.demonitor, pid, key, ref)
