"""System messages a process receives: exits (from links) and downs (from monitors).

They reach ``Actor.handle_message`` (exits only when the actor traps exits) with
the ended process's identifier as the sender. They are frozen dataclasses
registered with ``register_type``, so a process may forward them to another
node. ``reason`` is one of the ``TERMINATE_REASON_*`` atoms, the exception that
ended the process, or a ``gen`` error such as ``ErrNoConnection`` (the
connection to its node was lost) or ``ErrProcessUnknown`` (the target was
already gone when the link or monitor was made).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.gen.types import register_type

TERMINATE_REASON_NORMAL = Atom("normal")
TERMINATE_REASON_SHUTDOWN = Atom("shutdown")
TERMINATE_REASON_KILL = Atom("kill")


@register_type
@dataclass(frozen=True)
class MessageExitPID:
    """A linked process (by PID) ended."""

    pid: PID
    reason: Any


@register_type
@dataclass(frozen=True)
class MessageExitProcessID:
    """A process linked by registered name ended."""

    process_id: ProcessID
    reason: Any


@register_type
@dataclass(frozen=True)
class MessageExitAlias:
    """The process behind a linked alias ended."""

    alias: Alias
    reason: Any


@register_type
@dataclass(frozen=True)
class MessageExitNode:
    """The connection to a linked node ended."""

    name: Atom


@register_type
@dataclass(frozen=True)
class MessageDownPID:
    """A monitored process (by PID) ended; ``ref`` is the monitor's reference."""

    pid: PID
    ref: Ref
    reason: Any


@register_type
@dataclass(frozen=True)
class MessageDownProcessID:
    """A process monitored by registered name ended."""

    process_id: ProcessID
    ref: Ref
    reason: Any


@register_type
@dataclass(frozen=True)
class MessageDownAlias:
    """The process behind a monitored alias ended."""

    alias: Alias
    ref: Ref
    reason: Any


@register_type
@dataclass(frozen=True)
class MessageDownNode:
    """The connection to a monitored node ended."""

    name: Atom
    ref: Ref


MessageExit = MessageExitPID | MessageExitProcessID | MessageExitAlias | MessageExitNode
MessageDown = MessageDownPID | MessageDownProcessID | MessageDownAlias | MessageDownNode
