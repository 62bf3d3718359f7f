"""The frame codec (sans-IO): typed frames <-> bytes on an established link.

Wire shape, after the handshake (reference §6, our own body format)::

    [78][1][uint32 BE total length, header included][order][type] body

The body is one msgpack array of the frame's fields, packed with
:mod:`ergo_py.net.codec`, so PIDs, refs, aliases, tuples, registered
dataclasses and exceptions cross the wire as themselves. Identifiers carry
their node and creation in full: a frame means the same thing on any link.

The ``order`` byte lets a receiver spread frames over several queues while
keeping per-sender FIFO: frames with the same non-zero order byte must be
delivered in arrival order; 0 means "unordered, any queue". See
:func:`order_byte` and :func:`frame_order`.

Nothing here touches a socket. :func:`encode_frame` returns bytes;
:class:`FrameDecoder` is fed bytes and yields frames.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from ergo_py.gen.errors import ErrIncorrect, ErrTooLarge, RemoteProtocolError
from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref
from ergo_py.net import codec

MAGIC = 78
VERSION = 1
HEADER_SIZE = 8
_HEADER = struct.Struct(">BBIBB")
_MAX_TOTAL = 0xFFFFFFFF

# Frame type bytes (our numbering; loosely follows Ergo's groups).
TYPE_SEND_PID = 101
TYPE_SEND_NAME = 102
TYPE_SEND_ALIAS = 104
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


@dataclass(frozen=True, slots=True)
class SendPID:
    """A message to a process by PID."""

    from_: PID
    to: PID
    message: Any


@dataclass(frozen=True, slots=True)
class SendName:
    """A message to a registered name on the peer node."""

    from_: PID
    to: ProcessID
    message: Any


@dataclass(frozen=True, slots=True)
class SendAlias:
    """A message to an alias on the peer node."""

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
class Down:
    """``target`` (monitored under ``ref`` by ``to``) is gone, with ``reason``."""

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


Frame: TypeAlias = (
    SendPID
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
    | Down
    | SpawnRequest
    | SpawnResult
    | Keepalive
    | Close
)


# --- field checks -------------------------------------------------------------

_Check = Callable[[Any], Any]


def _exact(*types: type) -> _Check:
    names = "/".join(t.__name__ for t in types)

    def check(value: Any) -> Any:
        if type(value) not in types:
            raise RemoteProtocolError(f"expected {names}, got {type(value).__name__}")
        return value

    return check


def _any(value: Any) -> Any:
    return value


def _optional_pid(value: Any) -> Any:
    if value is not None and type(value) is not PID:
        raise RemoteProtocolError(f"expected PID or nil, got {type(value).__name__}")
    return value


def _env(value: Any) -> Any:
    if type(value) is not dict or not all(type(k) is str for k in value):
        raise RemoteProtocolError("expected a dict with str keys")
    return value


def _args(value: Any) -> Any:
    if type(value) not in (list, tuple):
        raise RemoteProtocolError(f"expected an argument list, got {type(value).__name__}")
    return tuple(value)


_pid = _exact(PID)
_name = _exact(ProcessID)
_alias = _exact(Alias)
_ref = _exact(Ref)
_str = _exact(str)
_bool = _exact(bool)
_target = _exact(PID, ProcessID, Alias)

# type byte -> (class, field names, field checks)
_SPECS: dict[int, tuple[type[Any], tuple[_Check, ...]]] = {
    TYPE_SEND_PID: (SendPID, (_pid, _pid, _any)),
    TYPE_SEND_NAME: (SendName, (_pid, _name, _any)),
    TYPE_SEND_ALIAS: (SendAlias, (_pid, _alias, _any)),
    TYPE_CALL_PID: (CallPID, (_pid, _pid, _ref, _any)),
    TYPE_CALL_NAME: (CallName, (_pid, _name, _ref, _any)),
    TYPE_CALL_ALIAS: (CallAlias, (_pid, _alias, _ref, _any)),
    TYPE_CALL_RESPONSE: (CallResponse, (_pid, _pid, _ref, _any)),
    TYPE_CALL_ERROR: (CallError, (_pid, _pid, _ref, _any)),
    TYPE_EXIT: (Exit, (_target, _pid, _any)),
    TYPE_LINK: (Link, (_pid, _target)),
    TYPE_UNLINK: (Unlink, (_pid, _target)),
    TYPE_MONITOR: (Monitor, (_pid, _target, _ref)),
    TYPE_DEMONITOR: (Demonitor, (_pid, _target, _ref)),
    TYPE_DOWN: (Down, (_pid, _target, _ref, _any)),
    TYPE_SPAWN_REQUEST: (SpawnRequest, (_pid, _ref, _str, _str, _args, _bool, _env)),
    TYPE_SPAWN_RESULT: (SpawnResult, (_pid, _ref, _optional_pid, _any)),
    TYPE_KEEPALIVE: (Keepalive, ()),
    TYPE_CLOSE: (Close, (_bool,)),
}
_TYPE_OF: dict[type[Any], int] = {cls: code for code, (cls, _) in _SPECS.items()}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(cls.__dataclass_fields__) for cls, _ in _SPECS.values()
}


def _getter(fields: tuple[str, ...]) -> Callable[[Any], list[Any]] | None:
    """The frame's field values as the body list, in one C-level attribute fetch."""
    if not fields:
        return None
    if len(fields) == 1:
        one = operator.attrgetter(fields[0])
        return lambda frame: [one(frame)]
    many = operator.attrgetter(*fields)
    return lambda frame: list(many(frame))


_GETTERS = {cls: _getter(fields) for cls, fields in _FIELDS.items()}


# --- ordering -----------------------------------------------------------------


def order_byte(sender_id: int) -> int:
    """The order byte for an ordered sender: always in 1..255, never 0.

    Ergo uses ``id % 255``, which is 0 (= "unordered") for every multiple of
    255; we shift by one so that every ordered sender keeps its FIFO.
    """
    return 1 + (sender_id % 255)


def frame_order(frame: Frame) -> int:
    """The order byte :func:`encode_frame` uses when none is given.

    Frames are ordered by the process on whose behalf they travel: the sender
    of a message, call, reply or exit, the process going down for a down
    message (so it queues behind that process's earlier messages). Keepalives
    and spawn results are unordered (0).

    An exit whose ``from_`` is a name or an alias does not say which process
    ended, so it gets 0 here (and a down for one gets its ref's order). A
    caller that knows the ended process's PID should pass
    ``order=order_byte(pid.id)`` to :func:`encode_frame` to keep the signal
    behind that process's earlier messages.
    """
    if isinstance(frame, Down):
        target = frame.target
        return order_byte(target.id) if isinstance(target, PID) else order_byte(frame.ref.id)
    sender = getattr(frame, "from_", None)
    if isinstance(sender, PID):
        return order_byte(sender.id)
    return 0


# --- encoding -----------------------------------------------------------------


def encode_frame(frame: Frame, max_size: int = 0, *, order: int | None = None) -> bytes:
    """Serialise ``frame``, header included.

    ``max_size`` is the *peer's* max message size (0: unlimited); a larger
    frame raises ``gen.ErrTooLarge`` and nothing is sent. ``order`` overrides
    :func:`frame_order`. A message term that cannot cross the wire raises
    ``gen.ErrUnsupportedType``; a non-frame or a bad order ``gen.ErrIncorrect``.
    Pure function: safe to call from any thread.
    """
    code = _TYPE_OF.get(type(frame))
    if code is None:
        raise ErrIncorrect(f"not a frame: {type(frame).__name__}")
    if order is None:
        order = frame_order(frame)
    elif not 0 <= order <= 255:
        raise ErrIncorrect(f"order byte out of range: {order}")
    get = _GETTERS[type(frame)]
    body = codec.encode(get(frame)) if get is not None else b""
    total = HEADER_SIZE + len(body)
    if max_size and total > max_size:
        raise ErrTooLarge(f"frame of {total} bytes exceeds the peer's limit of {max_size}")
    if total > _MAX_TOTAL:
        raise ErrTooLarge(f"frame of {total} bytes does not fit the 32-bit length")
    return _HEADER.pack(MAGIC, VERSION, total, order, code) + body


def decode_frame(frame_type: int, body: bytes) -> Frame:
    """Build the frame of ``frame_type`` from its body bytes.

    Raises ``gen.RemoteProtocolError`` for an unknown type, a body that does not
    decode, or fields of the wrong number or shape. Exposed so that a receiver
    can split a stream on the loop (:meth:`FrameDecoder.next_raw`) and decode
    bodies elsewhere.
    """
    spec = _SPECS.get(frame_type)
    if spec is None:
        raise RemoteProtocolError(f"unknown frame type {frame_type}")
    cls, checks = spec
    if not checks:
        if body:
            raise RemoteProtocolError(f"{cls.__name__} frame must have an empty body")
        return cls()  # type: ignore[no-any-return]
    values = codec.decode(body)
    if type(values) is not list or len(values) != len(checks):
        raise RemoteProtocolError(f"{cls.__name__} frame: wrong field count")
    try:
        return cls(*[check(v) for check, v in zip(checks, values, strict=True)])  # type: ignore[no-any-return]
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{cls.__name__} frame: {exc}") from None


# --- decoding a stream ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame split off the stream but not yet decoded."""

    order: int
    type: int
    body: bytes

    def decode(self) -> Frame:
        """The typed frame (see :func:`decode_frame`)."""
        return decode_frame(self.type, self.body)


_COMPACT_AT = 64 * 1024


class FrameDecoder:
    """Turns a byte stream into frames; data may be split at any byte.

    ``max_size`` is *our* max message size (0: unlimited): a header announcing
    a larger frame raises ``gen.ErrTooLarge`` before its body is buffered.
    Bad magic, version or type, and malformed bodies raise
    ``gen.RemoteProtocolError``. After either error the decoder is broken and
    raises the same error again: the link must be closed. Not thread-safe; one
    reader owns it.
    """

    __slots__ = ("_buf", "_error", "_max_size", "_pos")

    def __init__(self, max_size: int = 0) -> None:
        if max_size < 0:
            raise ErrIncorrect("max_size must be >= 0")
        self._max_size = max_size
        self._buf = bytearray()
        self._pos = 0
        self._error: Exception | None = None

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the link.

        Raises the decoder's earlier error if it is broken (nothing more is
        buffered). The size limit is checked by the first :meth:`next_raw` /
        :meth:`next_frame` after a header is complete, before any further
        bytes of its body are needed: a reader that drains after every read
        never holds more than one read chunk of an oversized frame.
        """
        if self._error is not None:
            raise self._error
        if self._pos and self._pos >= _COMPACT_AT and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def next_raw(self) -> RawFrame | None:
        """The next whole frame, body undecoded, or None when more data is needed.

        The header (magic, version, type, length limits) is fully checked here.
        """
        parts = self._next_parts()
        return RawFrame(*parts) if parts is not None else None

    def _next_parts(self) -> tuple[int, int, bytes] | None:
        """(order, type, body) of the next whole frame (no object: the hot path)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            if pos == len(buf) and pos:
                buf.clear()
                self._pos = 0
            return None
        magic, version, total, order, code = _HEADER.unpack_from(buf, pos)
        try:
            if magic != MAGIC:
                raise RemoteProtocolError(f"bad frame magic {magic}")
            if version != VERSION:
                raise RemoteProtocolError(f"unsupported frame version {version}")
            if code not in _SPECS:
                raise RemoteProtocolError(f"unknown frame type {code}")
            if total < HEADER_SIZE:
                raise RemoteProtocolError(f"frame length {total} is shorter than its header")
            if self._max_size and total > self._max_size:
                raise ErrTooLarge(f"frame of {total} bytes exceeds our limit of {self._max_size}")
        except (RemoteProtocolError, ErrTooLarge) as exc:
            self._error = exc
            raise
        end = pos + total
        if len(buf) < end:
            return None
        body = bytes(buf[pos + HEADER_SIZE : end])  # C-level copies beat a memoryview here
        self._pos = end
        return order, code, body

    def next_frame(self) -> Frame | None:
        """The next decoded frame, or None when more data is needed."""
        parts = self._next_parts()
        if parts is None:
            return None
        try:
            return decode_frame(parts[1], parts[2])
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def __iter__(self) -> Iterator[Frame]:
        """Every whole frame buffered so far."""
        while (frame := self.next_frame()) is not None:
            yield frame
