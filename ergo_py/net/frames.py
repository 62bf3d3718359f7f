"""The frame codec (sans-IO): typed frames <-> bytes on an established link.

Wire shape, after the handshake::

    [78][2][uint32 BE total length, header included][order][type] body

Sections below: the frame classes, the header and its type and order bytes;
how a frame's own identifiers are packed and cached ("identifier fields");
the body of each frame type and a node's :class:`FrameEncoder`
("layouts"); the :class:`FrameDecoder` a link's reader drains. Nothing here
touches a socket: an encoder returns bytes, a decoder is fed bytes and
yields frames.

The ``order`` byte lets a receiver spread frames over several queues while
keeping per-sender FIFO: frames with the same non-zero order byte must be
delivered in arrival order; 0 means "unordered, any queue". See
:func:`order_byte` and :func:`frame_order`.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple, TypeAlias

from ergo_py.gen.errors import ErrIncorrect, ErrTooLarge, ImpersonationError, RemoteProtocolError
from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref, make_ref
from ergo_py.net import codec

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


Send: TypeAlias = tuple[PID, Target, Any]
"""A send frame as :meth:`FrameDecoder.drain` yields it: a plain ``(from_, to,
message)`` tuple (building a named tuple costs about six times as much); the
type of ``to`` says which of the three it is. The classes above are the same
tuples with names."""

Frame: TypeAlias = (
    Send
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
    | Down
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
    if isinstance(frame, Down):
        target = frame.target
        return order_byte(target.id) if isinstance(target, PID) else order_byte(frame.ref.id)
    sender = frame[0] if isinstance(frame, tuple) else getattr(frame, "from_", None)
    if isinstance(sender, PID):
        return order_byte(sender.id)
    return 0


# === identifier fields =====================================================
#
# Identifier fields: a frame's own PIDs, names, refs and aliases, packed, checked, cached.
#
# A frame's own identifiers (senders, recipients, targets, refs) sit in fixed
# positions as plain msgpack arrays, with no extension type: every frame has
# them, and the ``default=`` hook that extension types need costs about three
# times as much to pack::
#
#     PID         [node: str, id: int, creation: int]
#     Ref, Alias  [node: str, id: bin (16 bytes, big-endian), creation: int]
#     ProcessID   [name: str, node: str]
#     target      one of the three shapes above (a PID, a ProcessID or an
#                 Alias; told apart by length and by the type of the id)
#     PID or nil  a PID array, or nil (SpawnResult.pid)
#
# Identifiers carry their node and creation in full: a frame means the same
# thing on any link. A node sends from the same few processes and a link hears
# from the same few, so both directions cache, in objects rather than module
# state: a node's :class:`IdEncoder` (inside its ``FrameEncoder``) and one
# :class:`IdDecoder` per link's decoder. Nodes in one process share nothing,
# and a peer can churn only its own link's caches.

REF_ID_BYTES = 16
CACHE_MAX = 4096
"""Entries per cache. A full cache is cleared wholesale: cheaper than an LRU,
and a link's working set is far smaller."""

Encode: TypeAlias = Callable[["IdEncoder", Any], bytes]
"""A field encoder: (the node's identifier cache, the value) -> msgpack bytes."""
Check: TypeAlias = Callable[["IdDecoder", Any], Any]
"""A field decoder: (the link's identifier cache, the unpacked value) -> the field."""
PairCache: TypeAlias = dict[bytes, tuple[int, PID, Any]]
"""Pair bytes -> (frame type byte, from_, to); a pair is valid for one type only."""


def shape(value: Any) -> str:
    """What ``value`` is, for an error message (never its contents)."""
    return type(value).__name__


def ref_id_bytes(ref: Ref | Alias) -> bytes:
    """The 16 id bytes of a ref or alias; ``gen.ErrIncorrect`` if the id is larger."""
    try:
        return ref.id.to_bytes(REF_ID_BYTES, "big")
    except OverflowError as exc:
        raise ErrIncorrect(f"{ref!r}: id does not fit {REF_ID_BYTES} bytes") from exc


def _fields(obj: Any, t: type) -> list[Any]:
    if t is PID:
        return [str(obj.node), obj.id, obj.creation]
    if t is ProcessID:
        return [str(obj.name), str(obj.node)]
    return [str(obj.node), ref_id_bytes(obj), obj.creation]


def bin_header(size: int) -> bytes:
    """The msgpack bin header for ``size`` bytes."""
    if size <= 0xFF:
        return bytes((0xC4, size))
    if size <= 0xFFFF:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")  # identifiers never come near 4 GiB


class IdEncoder:
    """A node's packed identifiers, by object identity.

    An entry holds its object, so the object's id cannot be reused while it
    is cached. Refs are not cached: each call has a fresh one. dict get and
    set are atomic, so every process thread of the node may use one encoder.
    """

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[int, tuple[Any, bytes]] = {}

    def packed(self, obj: Any, t: type) -> bytes:
        """``obj`` (of exact type ``t``) as a plain msgpack array."""
        known = self._known
        hit = known.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        data = codec.encode(_fields(obj, t))
        if t is not Ref:  # refs are fresh for every call: caching them would only churn
            if len(known) >= CACHE_MAX:
                known.clear()
            known[id(obj)] = (obj, data)
        return data

    def pair_bin(self, from_pid: PID, to: Any, to_type: type) -> bytes:
        """The (from_, to) pair as the bin field that send and call frames carry."""
        pair = b"\x92" + self.packed(from_pid, PID) + self.packed(to, to_type)
        return bin_header(len(pair)) + pair


def encoder(*types: type) -> Encode:
    """The field encoder for an identifier of one of ``types`` (exactly)."""
    names = "/".join(t.__name__ for t in types)

    def encode(ids: IdEncoder, value: Any) -> bytes:
        t = type(value)
        if t not in types:
            raise ErrIncorrect(f"expected {names}, got {t.__name__}")
        hit = ids._known.get(id(value))  # IdEncoder.packed's hit, inline
        if hit is not None and hit[0] is value:
            return hit[1]
        return ids.packed(value, t)

    return encode


def encode_optional_pid(ids: IdEncoder, value: Any) -> bytes:
    """The field encoder for a PID or None."""
    if value is None:
        return b"\xc0"  # nil
    if type(value) is not PID:
        raise ErrIncorrect(f"expected PID or None, got {shape(value)}")
    return ids.packed(value, PID)


class IdDecoder:
    """Identifiers read off one link, checked, and cached by their wire fields.

    ``peer``: the node on the other end of the link, or None to check
    nothing. ``pairs``: the ``[from, to]`` pairs of send and call frames,
    by their bytes, that passed :meth:`read_pair`. Not thread-safe: the
    link's reader owns it.
    """

    __slots__ = ("_known", "pairs", "peer")

    def __init__(self, peer: str | None = None) -> None:
        self.peer = peer
        self.pairs: PairCache = {}
        self._known: dict[tuple[Any, ...], Any] = {}  # PIDs and names: the same few recur

    def _remember(self, key: tuple[Any, ...], value: Any) -> None:
        if len(self._known) >= CACHE_MAX:
            self._known.clear()
        self._known[key] = value

    def pid(self, v: Any) -> PID:
        if type(v) is list and len(v) == 3:
            node, pid_id, creation = v
            if type(node) is str and type(pid_id) is int and type(creation) is int:
                key = (node, pid_id, creation)
                pid: PID | None = self._known.get(key)
                if pid is None:
                    pid = PID(node, pid_id, creation)
                    self._remember(key, pid)
                return pid
        raise RemoteProtocolError(f"expected a PID array, got {shape(v)}")

    def name(self, v: Any) -> ProcessID:
        if type(v) is list and len(v) == 2:
            name, node = v
            if type(name) is str and type(node) is str:
                key = (name, node)
                pn: ProcessID | None = self._known.get(key)
                if pn is None:
                    pn = ProcessID(name, node)
                    self._remember(key, pn)
                return pn
        raise RemoteProtocolError(f"expected a ProcessID array, got {shape(v)}")

    def ref(self, v: Any) -> Ref:
        return Ref(*_ref_parts(v, "a Ref"))

    def alias(self, v: Any) -> Alias:
        return Alias(*_ref_parts(v, "an Alias"))

    def target(self, v: Any) -> Any:
        if type(v) is list:
            if len(v) == 2:
                return self.name(v)
            if len(v) == 3 and type(v[1]) is int:
                return self.pid(v)
            if len(v) == 3:
                return self.alias(v)
        raise RemoteProtocolError(f"expected a PID, ProcessID or Alias array, got {shape(v)}")

    def optional_pid(self, v: Any) -> PID | None:
        return None if v is None else self.pid(v)

    def read_pair(self, code: int, pair: Any, what: str, decode_to: Check) -> tuple[int, PID, Any]:
        """Decode, check and cache a pair not cached yet for frame type ``code``.

        ``what`` names the frame in errors; ``decode_to`` decodes its ``to``.
        With ``peer``, the sender must be one of the peer's processes (a link
        speaks only for its own node), else :class:`gen.ImpersonationError`.
        Checked here, once per pair: :attr:`pairs` holds only pairs that passed.
        """
        both = codec.decode(pair) if type(pair) is bytes else None
        if type(both) is not list or len(both) != 2:
            raise RemoteProtocolError(f"{what} frame: expected a [from, to] pair")
        try:
            hit = (code, self.pid(both[0]), decode_to(self, both[1]))
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"{what} frame: {exc}") from None
        if self.peer is not None and hit[1].node != self.peer:
            raise ImpersonationError(what, hit[1], self.peer)
        pairs = self.pairs
        if len(pairs) >= CACHE_MAX:
            pairs.clear()
        pairs[pair] = hit
        return hit


def _ref_parts(v: Any, what: str) -> tuple[str, int, int]:
    if type(v) is list and len(v) == 3:
        node, rid, creation = v
        if (
            type(node) is str
            and type(rid) is bytes
            and len(rid) == REF_ID_BYTES
            and type(creation) is int
        ):
            return node, int.from_bytes(rid, "big"), creation
    raise RemoteProtocolError(f"expected {what} array, got {shape(v)}")


# === layouts ===============================================================
#
# Frame bodies: each frame type's layout, and a node's :class:`FrameEncoder`.
#
# Most frames have the generic layout: one msgpack array of the frame's
# fields in the order its class declares them, identifiers as in
# :mod:`~ergo_py.net.frames.ids`, the other fields (a message, a reason, a
# result, spawn arguments) terms packed with :mod:`ergo_py.net.codec`, so that
# PIDs, refs, tuples, registered dataclasses and exceptions *inside* them
# cross the wire as themselves. The send frames, call requests and responses
# (most of the traffic) and send batches have layouts of their own, described
# where they are defined below.
#
# Encoding goes through a :class:`FrameEncoder`, which owns the caches that
# make the hot paths cheap; each node has one. Decoding is driven by
# ``stream.FrameDecoder``; the functions here take its ``IdDecoder``.

# --- the generic layout ------------------------------------------------------------


def _exact(*types: type) -> Check:
    names = "/".join(t.__name__ for t in types)

    def check(ids: IdDecoder, value: Any) -> Any:
        if type(value) not in types:
            raise RemoteProtocolError(f"expected {names}, got {type(value).__name__}")
        return value

    return check


def _any(ids: IdDecoder, value: Any) -> Any:
    return value


def _env(ids: IdDecoder, value: Any) -> Any:
    if type(value) is not dict or not all(type(k) is str for k in value):
        raise RemoteProtocolError("expected a dict with str keys")
    return value


def _args(ids: IdDecoder, value: Any) -> Any:
    if type(value) not in (list, tuple):
        raise RemoteProtocolError(f"expected an argument list, got {type(value).__name__}")
    return tuple(value)


def _term(ids: IdEncoder, value: Any) -> bytes:
    return codec.encode(value)


# A field's (encoder, decoder). Identifier fields are plain arrays; the rest
# are codec terms.
_Field = tuple[Encode, Check]
_PID: _Field = (encoder(PID), IdDecoder.pid)
_REF: _Field = (encoder(Ref), IdDecoder.ref)
_TARGET: _Field = (encoder(PID, ProcessID, Alias), IdDecoder.target)
_OPT_PID: _Field = (encode_optional_pid, IdDecoder.optional_pid)
_TERM: _Field = (_term, _any)
_STR: _Field = (_term, _exact(str))
_BOOL: _Field = (_term, _exact(bool))
_ARGS: _Field = (_term, _args)
_ENV: _Field = (_term, _env)

# type byte -> (class, field codecs in declaration order)
_SPECS: dict[int, tuple[type[Any], tuple[_Field, ...]]] = {
    TYPE_CALL_ERROR: (CallError, (_PID, _PID, _REF, _TERM)),
    TYPE_EXIT: (Exit, (_TARGET, _PID, _TERM)),
    TYPE_LINK: (Link, (_PID, _TARGET)),
    TYPE_UNLINK: (Unlink, (_PID, _TARGET)),
    TYPE_MONITOR: (Monitor, (_PID, _TARGET, _REF)),
    TYPE_DEMONITOR: (Demonitor, (_PID, _TARGET, _REF)),
    TYPE_DOWN: (Down, (_PID, _TARGET, _REF, _TERM)),
    TYPE_SPAWN_REQUEST: (SpawnRequest, (_PID, _REF, _STR, _STR, _ARGS, _BOOL, _ENV)),
    TYPE_SPAWN_RESULT: (SpawnResult, (_PID, _REF, _OPT_PID, _TERM)),
    TYPE_KEEPALIVE: (Keepalive, ()),
    TYPE_CLOSE: (Close, (_BOOL,)),
}

_BodyEncoder = Callable[[IdEncoder, Any], bytes]


def _body_encoder(names: tuple[str, ...], encoders: tuple[Encode, ...]) -> _BodyEncoder:
    """Frame -> body bytes (array header and fields); unrolled for the common shapes."""
    array = bytes([0x90 | len(names)])  # a fixarray: every frame has fewer than 16 fields
    if not names:
        return lambda ids, frame: b""
    if len(names) == 1:
        (only,) = encoders
        return lambda ids, frame: array + only(ids, getattr(frame, names[0]))
    values = operator.attrgetter(*names)
    if len(names) == 2:
        g0, g1 = encoders

        def two(ids: IdEncoder, frame: Any) -> bytes:
            v0, v1 = values(frame)
            return b"".join((array, g0(ids, v0), g1(ids, v1)))

        return two
    if len(names) == 3:
        e0, e1, e2 = encoders

        def three(ids: IdEncoder, frame: Any) -> bytes:
            v0, v1, v2 = values(frame)
            return b"".join((array, e0(ids, v0), e1(ids, v1), e2(ids, v2)))

        return three
    if len(names) == 4:
        f0, f1, f2, f3 = encoders

        def four(ids: IdEncoder, frame: Any) -> bytes:
            v0, v1, v2, v3 = values(frame)
            return b"".join((array, f0(ids, v0), f1(ids, v1), f2(ids, v2), f3(ids, v3)))

        return four
    return lambda ids, frame: b"".join([array, *map(_call, encoders, repeat(ids), values(frame))])


def _call(encode: Encode, ids: IdEncoder, value: Any) -> bytes:
    return encode(ids, value)


# class -> (type byte, body encoder)
_ENCODING: dict[type[Any], tuple[int, _BodyEncoder]] = {
    cls: (code, _body_encoder(tuple(cls.__dataclass_fields__), tuple(e for e, _ in fields)))
    for code, (cls, fields) in _SPECS.items()
}

_BodyDecoder = Callable[[IdDecoder, list[Any]], Any]


def _body_decoder(cls: type[Any], checks: tuple[Check, ...]) -> _BodyDecoder:
    """Fields (already counted) -> the frame; unrolled for the common shapes."""
    if len(checks) == 3 and checks[2] is _any:
        c0, c1 = checks[:2]

        def three(ids: IdDecoder, v: list[Any]) -> Any:
            return cls(c0(ids, v[0]), c1(ids, v[1]), v[2])

        return three
    if len(checks) == 4 and checks[3] is _any:
        d0, d1, d2 = checks[:3]

        def four(ids: IdDecoder, v: list[Any]) -> Any:
            return cls(d0(ids, v[0]), d1(ids, v[1]), d2(ids, v[2]), v[3])

        return four
    return lambda ids, v: cls(*(check(ids, f) for check, f in zip(checks, v, strict=True)))


# type byte -> (class, field count, body decoder)
_DECODING: dict[int, tuple[type[Any], int, _BodyDecoder]] = {
    code: (cls, len(fields), _body_decoder(cls, tuple(dec for _, dec in fields)))
    for code, (cls, fields) in _SPECS.items()
}

# frame class -> the field naming the process it speaks for, which must be one
# of the sending peer's own (send and call frames: ``from_``, checked with
# their pair). A CallError speaks for its callee, a down for the process that
# went down.
_SPEAKER: dict[type[Any], str] = {
    CallError: "from_",
    Exit: "from_",
    Link: "from_",
    Unlink: "from_",
    Monitor: "from_",
    Demonitor: "from_",
    Down: "target",
    SpawnRequest: "from_",
}


# --- the send frames -----------------------------------------------------------
#
# Body: the msgpack array [pair: bin, is_tuple: bool, message]. ``pair`` holds
# the msgpack array [from_, to] of the two identifiers as one opaque byte
# string: a process sends to the same few recipients over and over, so each
# side maps the pair to and from identifier objects with one dict look-up
# instead of packing, unpacking and checking five fields per message.
# ``message`` is a codec term, except that a message that is a tuple (the
# usual shape: a tag and its data) travels as the array of its items with
# ``is_tuple`` true, which spares it the extension type's nested pack and
# unpack (a hook call each way). The decoder reads this layout itself
# (``stream.FrameDecoder.drain``, its hot path).

_SEND_TYPES: dict[type[Any], int] = {
    PID: TYPE_SEND_PID,
    ProcessID: TYPE_SEND_NAME,
    Alias: TYPE_SEND_ALIAS,
}
# send frame class -> the type its ``to`` must have
_SEND_TO_TYPES: dict[type[Any], type[Any]] = {SendPID: PID, SendName: ProcessID, SendAlias: Alias}
# type byte -> (class, decoder of ``to``)
SENDS: dict[int, tuple[type[Any], Check]] = {
    TYPE_SEND_PID: (SendPID, IdDecoder.pid),
    TYPE_SEND_NAME: (SendName, IdDecoder.name),
    TYPE_SEND_ALIAS: (SendAlias, IdDecoder.alias),
}
SendEntry: TypeAlias = tuple[Any, Any, int, bytes]
"""A known send pair: (from_, to, type byte, body prefix up to is_tuple)."""


# --- the call frames -------------------------------------------------------------
#
# Body: the msgpack array [pair: bin, ref, is_tuple: bool, term] for a request
# (CallPID, CallName, CallAlias) and a response (CallResponse). ``pair``,
# ``is_tuple`` and ``term`` (the request or the result) as for the send frames.
# ``ref`` is the 16 id bytes (bin) when the ref belongs to the caller's node
# incarnation, which every ref a node makes for its own calls does (the
# caller is the request's ``from_`` and the response's ``to``); otherwise the
# Ref array. A round trip then packs and unpacks no identifier at all once
# the pair is known. CallError keeps the generic layout (it is rare).

_CALL_TYPES: dict[type[Any], int] = {
    CallPID: TYPE_CALL_PID,
    CallName: TYPE_CALL_NAME,
    CallAlias: TYPE_CALL_ALIAS,
    CallResponse: TYPE_CALL_RESPONSE,
}
# type byte -> (class, decoder of ``to``, the type ``to`` must have, whether
# the ref's owner is ``from_`` (a request) or ``to`` (a response))
_CALLS: dict[int, tuple[type[Any], Check, type[Any], bool]] = {
    TYPE_CALL_PID: (CallPID, IdDecoder.pid, PID, True),
    TYPE_CALL_NAME: (CallName, IdDecoder.name, ProcessID, True),
    TYPE_CALL_ALIAS: (CallAlias, IdDecoder.alias, Alias, True),
    TYPE_CALL_RESPONSE: (CallResponse, IdDecoder.pid, PID, False),
}
_REF_BIN = b"\xc4\x10"  # bin 8 header for the 16 id bytes

# type byte -> (frame name, decoder of ``to``) for every frame with a pair
_PAIRED: dict[int, tuple[str, Check]] = {
    **{code: (cls.__name__, decode_to) for code, (cls, decode_to) in SENDS.items()},
    **{code: (cls.__name__, decode_to) for code, (cls, decode_to, _, _) in _CALLS.items()},
}


def read_pair(code: int, pair: Any, ids: IdDecoder) -> tuple[int, PID, Any]:
    """(type byte, from_, to) of a pair not in ``ids.pairs`` for a frame of type ``code``."""
    return ids.read_pair(code, pair, *_PAIRED[code])


def _known_pair(code: int, pair: bytes, ids: IdDecoder) -> tuple[int, PID, Any]:
    hit = ids.pairs.get(pair)
    if hit is None or hit[0] != code:
        hit = read_pair(code, pair, ids)
    return hit


def _decode_call(code: int, body: bytes | bytearray, ids: IdDecoder) -> Any:
    """The call request or response of type ``code``, fully checked."""
    cls, _, _, owner_is_from = _CALLS[code]
    values = codec.decode(body)
    if type(values) is list and len(values) == 4:
        pair, ref, is_tuple, term = values
        if type(pair) is bytes:
            from_, to = _known_pair(code, pair, ids)[1:]
            if type(ref) is bytes and len(ref) == REF_ID_BYTES:
                owner = from_ if owner_is_from else to
                rid = int.from_bytes(ref, "big")
                call_ref = make_ref(owner.node, rid, owner.creation)
            else:
                try:
                    call_ref = ids.ref(ref)
                except RemoteProtocolError as exc:
                    raise RemoteProtocolError(f"{cls.__name__} frame: {exc}") from None
            if is_tuple is True and type(term) is list:
                return cls(from_, to, call_ref, tuple(term))
            if is_tuple is False:
                return cls(from_, to, call_ref, term)
    raise RemoteProtocolError(f"{cls.__name__} frame: expected [pair, ref, is_tuple, term]")


# --- send batches ------------------------------------------------------------------
#
# A burst of sends from one process to one recipient, queued on a link one
# after the other, travels as one frame of the matching batch type: body
# [pair: bin, is_tuple_1, message_1, is_tuple_2, message_2, ...], each pair
# of items as in a send frame. The receiver unpacks the burst at once
# instead of a header, an unpack and a pair look-up per message. The sender
# encodes each message once (FrameEncoder.send_item); the writer keeps the
# items of the open burst and send_run turns them into bytes when the burst
# ends.

_BATCH_OF: dict[int, int] = {
    TYPE_SEND_PID: TYPE_SENDS_PID,
    TYPE_SEND_NAME: TYPE_SENDS_NAME,
    TYPE_SEND_ALIAS: TYPE_SENDS_ALIAS,
}
BATCHES: dict[int, int] = {batch: send for send, batch in _BATCH_OF.items()}
"""Batch type byte -> the type byte of the sends it holds."""
BATCH_MAX = 1 << 16  # bytes: no batch outgrows this (nor the peer's limit)


def _array_header(count: int) -> bytes:
    if count <= 15:
        return bytes((0x90 | count,))
    if count <= 0xFFFF:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def send_run(entry: SendEntry, order: int, items: list[bytes]) -> bytes:
    """The frame for sends queued together: a plain send frame for one, else a batch.

    ``entry`` and ``items`` as :meth:`FrameEncoder.send_item` made them.
    """
    prefix = entry[3]  # [array of 3][bin pair]
    if len(items) == 1:
        total = HEADER_SIZE + len(prefix) + len(items[0])
        return b"".join((HEADER_MV.pack(MAGIC_VERSION, total, order, entry[2]), prefix, items[0]))
    head = _array_header(1 + 2 * len(items)) + prefix[1:]
    body = b"".join(items)
    total = HEADER_SIZE + len(head) + len(body)
    header = HEADER_MV.pack(MAGIC_VERSION, total, order, _BATCH_OF[entry[2]])
    return b"".join((header, head, body))


def batch_sends(code: int, values: Any, append: Callable[[Any], None], ids: IdDecoder) -> None:
    """Append the sends of a batch frame of type ``code`` (its body decoded).

    All or nothing: a malformed batch appends none of its sends.
    """
    send_code = BATCHES[code]
    if type(values) is list and len(values) >= 3 and len(values) % 2 == 1:
        pair = values[0]
        if type(pair) is bytes:
            from_, to = _known_pair(send_code, pair, ids)[1:]
            sends = []
            for i in range(1, len(values), 2):
                is_tuple = values[i]
                message = values[i + 1]
                if is_tuple is True and type(message) is list:
                    sends.append((from_, to, tuple(message)))
                elif is_tuple is False:
                    sends.append((from_, to, message))
                else:
                    break
            else:
                for send in sends:
                    append(send)
                return
    raise RemoteProtocolError(
        f"{SENDS[send_code][0].__name__} batch: expected [pair, is_tuple, message, ...]"
    )


KNOWN_TYPES = frozenset(_DECODING) | frozenset(SENDS) | frozenset(_CALLS) | frozenset(BATCHES)


# --- decoding the other frames ---------------------------------------------------------


def decode_frame(code: int, body: bytes | bytearray, ids: IdDecoder) -> Frame:
    """The frame of type ``code`` from its body: a call or a generic-layout frame.

    (Sends and batches are read by the decoder itself.) Raises
    ``gen.RemoteProtocolError`` for a body that does not decode or fields of
    the wrong number or shape, :class:`gen.ImpersonationError` for a frame
    that speaks for a process not of ``ids.peer``.
    """
    spec = _DECODING.get(code)
    if spec is None:
        if code in _CALLS:
            return _decode_call(code, body, ids)  # type: ignore[no-any-return]
        raise RemoteProtocolError(f"unknown frame type {code}")
    cls, count, build = spec
    if not count:
        if body:
            raise RemoteProtocolError(f"{cls.__name__} frame must have an empty body")
        return cls()  # type: ignore[no-any-return]
    values = codec.decode(body)
    if type(values) is not list or len(values) != count:
        raise RemoteProtocolError(f"{cls.__name__} frame: wrong field count")
    try:
        frame = build(ids, values)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{cls.__name__} frame: {exc}") from None
    peer = ids.peer
    if peer is not None:
        speaker = _SPEAKER.get(cls)
        if speaker is not None and getattr(frame, speaker).node != peer:
            raise ImpersonationError(cls.__name__, getattr(frame, speaker), peer)
    return frame  # type: ignore[no-any-return]


# --- encoding -----------------------------------------------------------------


def too_large(total: int, max_size: int) -> ErrTooLarge:
    """The error for a frame of ``total`` bytes over the peer's ``max_size`` (0: none)."""
    if max_size and total > max_size:
        return ErrTooLarge(f"frame of {total} bytes exceeds the peer's limit of {max_size}")
    return ErrTooLarge(f"frame of {total} bytes does not fit the 32-bit length")


class FrameEncoder:
    """A node's frame encoder: typed frames -> bytes, header included.

    It owns the node's caches: packed identifiers (:class:`IdEncoder`) and
    the body prefixes of the send and call pairs it has seen, by object
    identity (an entry holds its objects, so their ids stay theirs while
    cached; each cache is bounded and cleared wholesale when full). Nothing
    is shared with other nodes. Safe to use from any thread: each cache
    look-up or store is one atomic dict operation.

    Every method raises ``gen.ErrTooLarge`` for a frame over ``max_size``
    (the *peer's* limit, 0: none) or the 32-bit length, and nothing is
    encoded; ``gen.ErrUnsupportedType`` for a term that cannot cross the
    wire; ``gen.ErrIncorrect`` for a non-frame, a field of the wrong type or
    an order byte out of range.
    """

    __slots__ = ("_calls", "_ids", "_sends")

    def __init__(self) -> None:
        self._ids = IdEncoder()
        # (id(from_), id(to)) -> SendEntry
        self._sends: dict[tuple[int, int], SendEntry] = {}
        # (id(from_), id(to), type byte) -> (from_, to, body prefix up to the ref)
        self._calls: dict[tuple[int, int, int], tuple[Any, Any, bytes]] = {}

    def encode_frame(self, frame: Frame, max_size: int = 0, *, order: int | None = None) -> bytes:
        """Serialise ``frame``; ``order`` overrides :func:`frame_order`."""
        call = _CALL_TYPES.get(type(frame))
        if call is not None:
            if order is None:
                order = frame_order(frame)
            f: Any = frame
            term = f.result if call == TYPE_CALL_RESPONSE else f.message
            try:
                return self.encode_call(call, f.from_, f.to, f.ref, term, order, max_size)
            except ErrIncorrect as exc:
                raise ErrIncorrect(f"{type(frame).__name__} frame: {exc}") from None
        spec = _ENCODING.get(type(frame))
        to_type = _SEND_TO_TYPES.get(type(frame)) if spec is None else None
        if type(frame) is tuple and len(frame) == 3:
            to_type = type(frame[1])  # a plain send frame: encode_send checks it
        if spec is None and to_type is None:
            raise ErrIncorrect(f"not a frame: {type(frame).__name__}")
        if order is None:
            order = frame_order(frame)
        elif not 0 <= order <= 255:
            raise ErrIncorrect(f"order byte out of range: {order}")
        try:
            if to_type is not None:
                from_pid, to, message = frame  # type: ignore[misc]
                if type(to) is not to_type:
                    raise ErrIncorrect(f"expected {to_type.__name__}, got {shape(to)}")
                return self.encode_send(from_pid, to, message, order, max_size)
            assert spec is not None
            code, build = spec
            body = build(self._ids, frame)
        except ErrIncorrect as exc:
            raise ErrIncorrect(f"{type(frame).__name__} frame: {exc}") from None
        total = HEADER_SIZE + len(body)
        if (max_size and total > max_size) or total > MAX_TOTAL:
            raise too_large(total, max_size)
        return HEADER.pack(MAGIC, VERSION, total, order, code) + body

    def encode_send(
        self, from_pid: PID, to: Target, message: Any, order: int, max_size: int = 0
    ) -> bytes:
        """The send frame for ``to``'s type from ``from_pid`` with ``message``, unbuilt.

        As :meth:`encode_frame` of a :class:`SendPID`, :class:`SendName` or
        :class:`SendAlias`; ``order`` is the order byte (see ``order_byte``).
        """
        entry, item = self.send_item(from_pid, to, message, order, max_size)
        return send_run(entry, order, [item])

    def send_item(
        self, from_pid: PID, to: Target, message: Any, order: int, max_size: int = 0
    ) -> tuple[SendEntry, bytes]:
        """A send encoded in two parts: its pair entry and its item.

        The item (is_tuple and the message) is what a batch repeats; the hot
        path of every remote send queues it on a writer that merges bursts
        (see "send batches"), :func:`send_run` makes the frame. The size is
        checked for the send on its own.
        """
        hit = self._sends.get((id(from_pid), id(to)))
        if hit is None or hit[0] is not from_pid or hit[1] is not to:
            hit = self._send_prefix(from_pid, to)
        if not 0 <= order <= 255:
            raise ErrIncorrect(f"order byte out of range: {order}")
        if type(message) is tuple:  # the items follow as an array
            item = b"\xc3" + codec.encode(list(message))
        else:
            item = b"\xc2" + codec.encode(message)
        total = HEADER_SIZE + len(hit[3]) + len(item)
        if (max_size and total > max_size) or total > MAX_TOTAL:
            raise too_large(total, max_size)
        return hit, item

    def _send_prefix(self, from_pid: Any, to: Any) -> SendEntry:
        if type(from_pid) is not PID:
            raise ErrIncorrect(f"expected PID, got {shape(from_pid)}")
        code = _SEND_TYPES.get(type(to))
        if code is None:
            raise ErrIncorrect(f"expected PID/ProcessID/Alias, got {shape(to)}")
        entry = (from_pid, to, code, b"\x93" + self._ids.pair_bin(from_pid, to, type(to)))
        sends = self._sends
        if len(sends) >= CACHE_MAX:
            sends.clear()
        sends[(id(from_pid), id(to))] = entry
        return entry

    def encode_call(
        self, code: int, from_pid: PID, to: Any, ref: Ref, term: Any, order: int, max_size: int = 0
    ) -> bytes:
        """A call request or response (``code``), unbuilt.

        ``code`` is one of ``TYPE_CALL_PID``, ``TYPE_CALL_NAME``,
        ``TYPE_CALL_ALIAS`` (``term`` is the request) or
        ``TYPE_CALL_RESPONSE`` (``term`` is the result).
        """
        spec = _CALLS.get(code)
        if spec is None:
            raise ErrIncorrect(f"not a call frame type: {code}")
        hit = self._calls.get((id(from_pid), id(to), code))
        if hit is None or hit[0] is not from_pid or hit[1] is not to:
            hit = self._call_prefix(code, from_pid, to)
        if not 0 <= order <= 255:
            raise ErrIncorrect(f"order byte out of range: {order}")
        if type(ref) is not Ref:
            raise ErrIncorrect(f"expected Ref, got {shape(ref)}")
        owner = from_pid if spec[3] else to
        if ref.node == owner.node and ref.creation == owner.creation:
            ref_bytes = _REF_BIN + ref_id_bytes(ref)
        else:
            ref_bytes = self._ids.packed(ref, Ref)
        if type(term) is tuple:
            flag, body = b"\xc3", codec.encode(list(term))
        else:
            flag, body = b"\xc2", codec.encode(term)
        prefix = hit[2]
        total = HEADER_SIZE + len(prefix) + len(ref_bytes) + 1 + len(body)
        if (max_size and total > max_size) or total > MAX_TOTAL:
            raise too_large(total, max_size)
        return b"".join(
            (HEADER_MV.pack(MAGIC_VERSION, total, order, code), prefix, ref_bytes, flag, body)
        )

    def _call_prefix(self, code: int, from_pid: Any, to: Any) -> tuple[Any, Any, bytes]:
        if type(from_pid) is not PID:
            raise ErrIncorrect(f"expected PID, got {shape(from_pid)}")
        to_type = _CALLS[code][2]
        if type(to) is not to_type:
            raise ErrIncorrect(f"expected {to_type.__name__}, got {shape(to)}")
        entry = (from_pid, to, b"\x94" + self._ids.pair_bin(from_pid, to, to_type))
        calls = self._calls
        if len(calls) >= CACHE_MAX:
            calls.clear()
        calls[(id(from_pid), id(to), code)] = entry
        return entry


# === the stream decoder ====================================================
#
# The stream decoder: bytes from a link in, typed frames out (sans-IO).
#
# A link's reader feeds it whatever each read returned and drains the whole
# frames; the frame header is checked as soon as it is complete, so an
# oversized or foreign stream is refused before its body is buffered. The
# send frames, most of the traffic, are read here inline (see "the send
# frames" in layouts); the rest through ``layouts.decode_frame``.

_COMPACT_AT = 64 * 1024  # bytes consumed before the buffer's head is cut off


class FrameDecoder:
    """Turns a byte stream into frames; data may be split at any byte.

    ``max_size`` is *our* max message size (0: unlimited): a header announcing
    a larger frame raises ``gen.ErrTooLarge`` before its body is buffered.
    Bad magic, version or type, and malformed bodies raise
    ``gen.RemoteProtocolError``. After either error the decoder is broken and
    raises the same error again: the link must be closed. Not thread-safe; one
    reader owns it.

    ``peer``: the node on the other end of the link. Every frame must then
    speak for one of its processes only (the sender of a message, call,
    reply, exit, link or monitor, the target of a down); one that names a
    process of another node raises :class:`gen.ImpersonationError`, so a
    peer cannot forge a reply or a signal on behalf of a third node. The
    decoder keeps its own identifier caches (an ``IdDecoder``), whose
    sender/recipient pairs are only those that passed that check.
    """

    __slots__ = ("_buf", "_error", "_ids", "_max_size", "_pos")

    def __init__(self, max_size: int = 0, peer: str | None = None) -> None:
        if max_size < 0:
            raise ErrIncorrect("max_size must be >= 0")
        self._max_size = max_size
        self._ids = IdDecoder(peer)
        self._buf = bytearray()
        self._pos = 0
        self._error: Exception | None = None

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the link.

        Raises the decoder's earlier error if it is broken (nothing more is
        buffered). The size limit is checked by the first :meth:`drain`
        after a header is complete, before any further bytes of its body are
        needed: a reader that drains after every read never holds more than
        one read chunk of an oversized frame.
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

    def drain(self, out: list[Frame]) -> None:
        """Append every whole frame buffered so far to ``out``, in order.

        One call per read. Send frames (and the sends of a batch) come out as
        plain ``(from_, to, message)`` tuples (:data:`Send`), the others as
        their classes. Keepalives are consumed, not appended: they carry
        nothing. It stops after a :class:`Close` (the last one appended;
        anything after it stays buffered, see :attr:`buffered`). On an error
        ``out`` holds the frames before the bad one, and the decoder is
        broken.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        end = len(buf)
        limit = self._max_size
        unpack = HEADER_MV.unpack_from
        known = KNOWN_TYPES
        sends = SENDS
        batches = BATCHES
        ids = self._ids
        pairs = ids.pairs
        decode = codec.decode
        append = out.append
        try:
            while end - pos >= HEADER_SIZE:
                magic_version, total, _, code = unpack(buf, pos)
                if (
                    magic_version != MAGIC_VERSION
                    or code not in known
                    or total < HEADER_SIZE
                    or (limit and total > limit)
                ):
                    self._refuse(magic_version >> 8, magic_version & 0xFF, total, code)
                stop = pos + total
                if stop > end:
                    break
                body = buf[pos + HEADER_SIZE : stop]
                pos = stop
                if code in sends:  # [pair, is_tuple, message], read here: the hot path
                    values = decode(body)
                    if type(values) is list and len(values) == 3:
                        pair, is_tuple, message = values
                        hit = pairs.get(pair) if type(pair) is bytes else None
                        if hit is None or hit[0] != code:
                            hit = read_pair(code, pair, ids)
                        if is_tuple is True and type(message) is list:
                            append((hit[1], hit[2], tuple(message)))
                            continue
                        if is_tuple is False:
                            append((hit[1], hit[2], message))
                            continue
                    raise RemoteProtocolError(
                        f"{sends[code][0].__name__} frame: expected [pair, is_tuple, message]"
                    )
                if code in batches:
                    batch_sends(code, decode(body), append, ids)
                    continue
                frame = decode_frame(code, body, ids)
                if type(frame) is Keepalive:
                    continue
                append(frame)
                if type(frame) is Close:
                    break
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        finally:
            if pos == end and pos:
                buf.clear()
                pos = 0
            self._pos = pos

    def _refuse(self, magic: int, version: int, total: int, code: int) -> None:
        exc: RemoteProtocolError | ErrTooLarge
        if magic != MAGIC:
            exc = RemoteProtocolError(f"bad frame magic {magic}")
        elif version != VERSION:
            exc = RemoteProtocolError(f"unsupported frame version {version}")
        elif code not in KNOWN_TYPES:
            exc = RemoteProtocolError(f"unknown frame type {code}")
        elif total < HEADER_SIZE:
            exc = RemoteProtocolError(f"frame length {total} is shorter than its header")
        else:
            exc = ErrTooLarge(f"frame of {total} bytes exceeds our limit of {self._max_size}")
        self._error = exc
        raise exc
