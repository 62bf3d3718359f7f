"""What travels on a link: the frame classes, the header and its type and order bytes.

Kept apart from the code that packs and unpacks frames so that a reader (and
the runtime, which builds and dispatches on these classes) sees the
vocabulary without the codec around it. See the package docstring for the
wire shape.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref
from ergo_py.gen.node import SendBatch

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "TYPE_CALL_ALIAS",
    "TYPE_CALL_ERROR",
    "TYPE_CALL_NAME",
    "TYPE_CALL_PID",
    "TYPE_CALL_RESPONSE",
    "TYPE_CLOSE",
    "TYPE_DEMONITOR",
    "TYPE_DOWN",
    "TYPE_EXIT",
    "TYPE_KEEPALIVE",
    "TYPE_LINK",
    "TYPE_MONITOR",
    "TYPE_SENDS_ALIAS",
    "TYPE_SENDS_NAME",
    "TYPE_SENDS_PID",
    "TYPE_SEND_ALIAS",
    "TYPE_SEND_NAME",
    "TYPE_SEND_PID",
    "TYPE_SPAWN_REQUEST",
    "TYPE_SPAWN_RESULT",
    "TYPE_UNLINK",
    "VERSION",
    "CallAlias",
    "CallError",
    "CallName",
    "CallPID",
    "CallResponse",
    "Close",
    "Demonitor",
    "DownFrame",
    "Exit",
    "Frame",
    "Keepalive",
    "Link",
    "Monitor",
    "Send",
    "SendAlias",
    "SendName",
    "SendPID",
    "SpawnRequest",
    "SpawnResult",
    "Target",
    "Unlink",
    "frame_order",
    "order_byte",
]

MAGIC = 78
VERSION = 2
HEADER_SIZE = 8
HEADER = struct.Struct(">BBIBB")  # magic, version, total length, order, type
HEADER_MV = struct.Struct(">HIBB")  # HEADER with magic and version as one number
MAGIC_VERSION = MAGIC << 8 | VERSION
MAX_TOTAL = 0xFFFFFFFF  # the length field is 32 bits, header included

# Frame type bytes (our numbering; loosely follows Ergo's groups).
TYPE_SEND_PID = 101
TYPE_SEND_NAME = 102
TYPE_SEND_ALIAS = 104
# Several sends between the same two processes in one frame (a writer
# merges a burst as it is queued; see "send batches" in layouts).
TYPE_SENDS_PID = 111
TYPE_SENDS_NAME = 112
TYPE_SENDS_ALIAS = 114
TYPE_EXIT = 107
TYPE_DOWN = 108
TYPE_CALL_PID = 121
TYPE_CALL_NAME = 122
TYPE_CALL_ALIAS = 123
TYPE_CALL_RESPONSE = 129
TYPE_CALL_ERROR = 130
TYPE_LINK = 140
TYPE_UNLINK = 141
TYPE_MONITOR = 142
TYPE_DEMONITOR = 143
TYPE_SPAWN_REQUEST = 150
TYPE_SPAWN_RESULT = 151
TYPE_KEEPALIVE = 200
TYPE_CLOSE = 201

Target: TypeAlias = PID | ProcessID | Alias
"""What a link or monitor may point at: a process, a registered name or an alias."""


# --- frames -----------------------------------------------------------------


class SendPID(NamedTuple):
    """A message to a process by PID.

    The three send frames are named tuples ``(from_, to, message)``, not
    dataclasses: they are most of the traffic and a tuple is built at a
    third of the cost. The decoder yields them as plain tuples (:data:`Send`).
    """

    from_: PID
    to: PID
    message: Any


class SendName(NamedTuple):
    """A message to a registered name on the peer node (see :class:`SendPID`)."""

    from_: PID
    to: ProcessID
    message: Any


class SendAlias(NamedTuple):
    """A message to an alias on the peer node (see :class:`SendPID`)."""

    from_: PID
    to: Alias
    message: Any


@dataclass(frozen=True, slots=True)
class CallPID:
    """A request to a process by PID; the reply names ``ref`` and goes to ``from_``."""

    from_: PID
    to: PID
    ref: Ref
    message: Any


@dataclass(frozen=True, slots=True)
class CallName:
    """A request to a registered name; the reply names ``ref`` and goes to ``from_``."""

    from_: PID
    to: ProcessID
    ref: Ref
    message: Any


@dataclass(frozen=True, slots=True)
class CallAlias:
    """A request to an alias; the reply names ``ref`` and goes to ``from_``."""

    from_: PID
    to: Alias
    ref: Ref
    message: Any


@dataclass(frozen=True, slots=True)
class CallResponse:
    """The result of a call: ``from_`` answered the caller ``to``'s request ``ref``."""

    from_: PID
    to: PID
    ref: Ref
    result: Any


@dataclass(frozen=True, slots=True)
class CallError:
    """A call that failed at the callee's node (unknown process, refused, ...)."""

    from_: PID
    to: PID
    ref: Ref
    error: Any


@dataclass(frozen=True, slots=True)
class Exit:
    """An exit signal from ``from_`` to ``to`` with ``reason``.

    ``from_`` is the identifier ``to`` linked (a PID, or a name or alias it
    linked by), or the sender of an explicit exit.
    """

    from_: Target
    to: PID
    reason: Any


@dataclass(frozen=True, slots=True)
class Link:
    """``from_`` links itself to ``target`` on the peer node."""

    from_: PID
    target: Target


@dataclass(frozen=True, slots=True)
class Unlink:
    """``from_`` removes its link to ``target``."""

    from_: PID
    target: Target


@dataclass(frozen=True, slots=True)
class Monitor:
    """``from_`` monitors ``target``; the down message will carry ``ref``."""

    from_: PID
    target: Target
    ref: Ref


@dataclass(frozen=True, slots=True)
class Demonitor:
    """``from_`` drops the monitor ``ref`` on ``target``."""

    from_: PID
    target: Target
    ref: Ref


@dataclass(frozen=True, slots=True)
class DownFrame:
    """``target`` (monitored under ``ref`` by ``to``) is gone, with ``reason``.

    Named apart from the node's ``Down`` envelope (``node/process.py``), which
    is what a process receives.
    """

    to: PID
    target: Target
    ref: Ref
    reason: Any


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """``from_`` asks the peer to spawn from the factory named ``factory``.

    ``register`` is a name to register the new process under ("" for none);
    ``link_parent`` and ``env`` are the requester's ``gen.ProcessOptions``
    (the parent is ``from_``). The answer is a :class:`SpawnResult` with the
    same ``ref``.
    """

    from_: PID
    ref: Ref
    factory: str
    register: str
    args: tuple[Any, ...]
    link_parent: bool
    env: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpawnResult:
    """The answer to a spawn request: ``pid`` on success, else ``error``."""

    to: PID
    ref: Ref
    pid: PID | None
    error: Any


@dataclass(frozen=True, slots=True)
class Keepalive:
    """An empty frame that proves the link is alive."""


@dataclass(frozen=True, slots=True)
class Close:
    """The sender puts nothing more on this link (a half-close, like a TCP FIN).

    Each side sends one on every link of a connection it stops using and keeps
    reading until the peer's Close arrives, so nothing either side accepted
    is lost. ``replaced``: the sender moves to a new connection to the same
    node (a hand-over, e.g. after a certificate rotation) rather than leaving.
    """

    replaced: bool


Send: TypeAlias = tuple[PID, Target, Any]
"""A send frame as :meth:`FrameDecoder.drain` yields it: a plain ``(from_, to,
message)`` tuple (building a named tuple costs about six times as much); the
type of ``to`` says which of the three it is. The classes above are the same
tuples with names. A send batch frame comes out as one ``gen.SendBatch``
(the sender, the recipient and the list of messages)."""

Frame: TypeAlias = (
    Send
    | SendBatch
    | SendPID
    | SendName
    | SendAlias
    | CallPID
    | CallName
    | CallAlias
    | CallResponse
    | CallError
    | Exit
    | Link
    | Unlink
    | Monitor
    | Demonitor
    | DownFrame
    | SpawnRequest
    | SpawnResult
    | Keepalive
    | Close
)


# --- the order byte -------------------------------------------------------------


def order_byte(sender_id: int) -> int:
    """The order byte for an ordered sender: always in 1..255, never 0.

    Ergo uses ``id % 255``, which is 0 (= "unordered") for every multiple of
    255; we shift by one so that every ordered sender keeps its FIFO.
    """
    return 1 + (sender_id % 255)


def frame_order(frame: Frame) -> int:
    """The order byte ``FrameEncoder.encode_frame`` uses when none is given.

    Frames are ordered by the process on whose behalf they travel: the sender
    of a message, call, reply or exit, the process going down for a down
    message (so it queues behind that process's earlier messages). Keepalives
    and spawn results are unordered (0).

    An exit whose ``from_`` is a name or an alias does not say which process
    ended, so it gets 0 here (and a down for one gets its ref's order). A
    caller that knows the ended process's PID should pass
    ``order=order_byte(pid.id)`` to keep the signal behind that process's
    earlier messages.
    """
    if isinstance(frame, DownFrame):
        target = frame.target
        return order_byte(target.id) if isinstance(target, PID) else order_byte(frame.ref.id)
    sender = frame[0] if isinstance(frame, tuple) else getattr(frame, "from_", None)
    if isinstance(sender, PID):
        return order_byte(sender.id)
    return 0
