"""The frame codec (sans-IO): typed frames <-> bytes on an established link.

Wire shape, after the handshake (reference §6, our own body format)::

    [78][2][uint32 BE total length, header included][order][type] body

The body is one msgpack array of the frame's fields, in the order the frame
class declares them (the send frames and the call requests and responses,
most of the traffic, have layouts of their own: see "the send frames" and
"the call frames" in the code). The frame's *own*
identifiers (senders, recipients, targets, refs: every field typed as one
below) sit in their fixed positions as plain msgpack arrays, with no
extension type, because each frame has them and the ``default=`` hook that
extension types need costs about three times as much to pack::

    PID         [node: str, id: int, creation: int]
    Ref, Alias  [node: str, id: bin (16 bytes, big-endian), creation: int]
    ProcessID   [name: str, node: str]
    target      one of the three shapes above (a PID, a ProcessID or an
                Alias; told apart by length and by the type of the id)
    PID or nil  a PID array, or nil (SpawnResult.pid)

The other fields (the message, a reason, a result, spawn arguments) are terms
packed with :mod:`ergo_py.net.codec`, so PIDs, refs, aliases, tuples,
registered dataclasses and exceptions *inside* them cross the wire as
themselves (extension types). Identifiers carry their node and creation in
full: a frame means the same thing on any link. The encoded form of an
identifier object is kept (bounded, by object identity), so a process's own
PID is packed once, not once per frame.

The ``order`` byte lets a receiver spread frames over several queues while
keeping per-sender FIFO: frames with the same non-zero order byte must be
delivered in arrival order; 0 means "unordered, any queue". See
:func:`order_byte` and :func:`frame_order`.

Nothing here touches a socket. :func:`encode_frame` (and :func:`encode_send`,
its fast path for messages) returns bytes; :class:`FrameDecoder` is fed bytes
and yields frames.

``VERSION`` 2 (since 2026-11-29) is version 1 with the send-frame layout, the
call-frame layout (requests and responses, see "the call frames") and send
batches (several sends between two processes in one frame, see "send
batches").
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from ergo_py.gen.errors import ErrIncorrect, ErrTooLarge, ImpersonationError, RemoteProtocolError
from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref, make_ref
from ergo_py.net import codec

MAGIC = 78
VERSION = 2
HEADER_SIZE = 8
_HEADER = struct.Struct(">BBIBB")
_HEADER_MV = struct.Struct(">HIBB")  # _HEADER with magic and version as one number
_MAGIC_VERSION = MAGIC << 8 | VERSION
_MAX_TOTAL = 0xFFFFFFFF

# Frame type bytes (our numbering; loosely follows Ergo's groups).
TYPE_SEND_PID = 101
TYPE_SEND_NAME = 102
TYPE_SEND_ALIAS = 104
# Several sends between the same two processes in one frame (a writer
# merges a burst as it is queued; see "send batches").
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
    dataclasses: they are most of the traffic, a tuple is built at a third of
    the cost, and the receiver routes them as they are.
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


# --- field codecs ---------------------------------------------------------------

_Check = Callable[[Any], Any]
_Encode = Callable[[Any], bytes]

_REF_ID_BYTES = 16
_CACHE_MAX = 4096

# Encoded identifiers by object identity: id(obj) -> (obj, bytes). The entry
# holds the object, so its id cannot be reused while cached. Bounded; cleared
# wholesale when full. dict get/set are atomic: any thread may use it.
_enc_cache: dict[int, tuple[Any, bytes]] = {}
# Decoded PIDs and names by their wire fields: the same few arrive over and over.
_dec_cache: dict[tuple[Any, ...], Any] = {}


def _shape(value: Any) -> str:
    return type(value).__name__


def _ident_fields(obj: Any, t: type) -> list[Any]:
    if t is PID:
        return [str(obj.node), obj.id, obj.creation]
    if t is ProcessID:
        return [str(obj.name), str(obj.node)]
    try:
        rid = obj.id.to_bytes(_REF_ID_BYTES, "big")
    except OverflowError as exc:
        raise ErrIncorrect(f"{obj!r}: id does not fit {_REF_ID_BYTES} bytes") from exc
    return [str(obj.node), rid, obj.creation]


def _ident_bytes(obj: Any, t: type) -> bytes:
    """``obj`` (of exact type ``t``) as a plain msgpack array; cached unless a Ref."""
    hit = _enc_cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    data = codec.encode(_ident_fields(obj, t))
    if t is not Ref:  # refs are fresh for every call: caching them would only churn
        if len(_enc_cache) >= _CACHE_MAX:
            _enc_cache.clear()
        _enc_cache[id(obj)] = (obj, data)
    return data


def _encoder(*types: type) -> _Encode:
    names = "/".join(t.__name__ for t in types)

    def encode(value: Any) -> bytes:
        t = type(value)
        if t not in types:
            raise ErrIncorrect(f"expected {names}, got {t.__name__}")
        hit = _enc_cache.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        return _ident_bytes(value, t)

    return encode


def _encode_optional_pid(value: Any) -> bytes:
    if value is None:
        return b"\xc0"  # nil
    if type(value) is not PID:
        raise ErrIncorrect(f"expected PID or None, got {_shape(value)}")
    return _ident_bytes(value, PID)


def _remember(key: tuple[Any, ...], value: Any) -> None:
    if len(_dec_cache) >= _CACHE_MAX:
        _dec_cache.clear()
    _dec_cache[key] = value


def _decode_pid(v: Any) -> PID:
    if type(v) is list and len(v) == 3:
        node, pid_id, creation = v
        if type(node) is str and type(pid_id) is int and type(creation) is int:
            key = (node, pid_id, creation)
            pid: PID | None = _dec_cache.get(key)
            if pid is None:
                pid = PID(node, pid_id, creation)
                _remember(key, pid)
            return pid
    raise RemoteProtocolError(f"expected a PID array, got {_shape(v)}")


def _decode_name(v: Any) -> ProcessID:
    if type(v) is list and len(v) == 2:
        name, node = v
        if type(name) is str and type(node) is str:
            key = (name, node)
            pn: ProcessID | None = _dec_cache.get(key)
            if pn is None:
                pn = ProcessID(name, node)
                _remember(key, pn)
            return pn
    raise RemoteProtocolError(f"expected a ProcessID array, got {_shape(v)}")


def _ref_parts(v: Any, what: str) -> tuple[str, int, int]:
    if type(v) is list and len(v) == 3:
        node, rid, creation = v
        if (
            type(node) is str
            and type(rid) is bytes
            and len(rid) == _REF_ID_BYTES
            and type(creation) is int
        ):
            return node, int.from_bytes(rid, "big"), creation
    raise RemoteProtocolError(f"expected {what} array, got {_shape(v)}")


def _decode_ref(v: Any) -> Ref:
    return Ref(*_ref_parts(v, "a Ref"))


def _decode_alias(v: Any) -> Alias:
    return Alias(*_ref_parts(v, "an Alias"))


def _decode_target(v: Any) -> Any:
    if type(v) is list:
        if len(v) == 2:
            return _decode_name(v)
        if len(v) == 3 and type(v[1]) is int:
            return _decode_pid(v)
        if len(v) == 3:
            return _decode_alias(v)
    raise RemoteProtocolError(f"expected a PID, ProcessID or Alias array, got {_shape(v)}")


def _decode_optional_pid(v: Any) -> PID | None:
    return None if v is None else _decode_pid(v)


def _exact(*types: type) -> _Check:
    names = "/".join(t.__name__ for t in types)

    def check(value: Any) -> Any:
        if type(value) not in types:
            raise RemoteProtocolError(f"expected {names}, got {type(value).__name__}")
        return value

    return check


def _any(value: Any) -> Any:
    return value


def _env(value: Any) -> Any:
    if type(value) is not dict or not all(type(k) is str for k in value):
        raise RemoteProtocolError("expected a dict with str keys")
    return value


def _args(value: Any) -> Any:
    if type(value) not in (list, tuple):
        raise RemoteProtocolError(f"expected an argument list, got {type(value).__name__}")
    return tuple(value)


# A field's (encoder, decoder). Identifier fields are plain arrays; the rest
# are codec terms.
_Field = tuple[_Encode, _Check]
_PID: _Field = (_encoder(PID), _decode_pid)
_NAME: _Field = (_encoder(ProcessID), _decode_name)
_ALIAS: _Field = (_encoder(Alias), _decode_alias)
_REF: _Field = (_encoder(Ref), _decode_ref)
_TARGET: _Field = (_encoder(PID, ProcessID, Alias), _decode_target)
_OPT_PID: _Field = (_encode_optional_pid, _decode_optional_pid)
_TERM: _Field = (codec.encode, _any)
_STR: _Field = (codec.encode, _exact(str))
_BOOL: _Field = (codec.encode, _exact(bool))
_ARGS: _Field = (codec.encode, _args)
_ENV: _Field = (codec.encode, _env)

# type byte -> (class, field codecs in declaration order); the send and call
# frames have their own layout (below)
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


def _body_encoder(names: tuple[str, ...], encoders: tuple[_Encode, ...]) -> Callable[[Any], bytes]:
    """Frame -> body bytes (array header and fields); unrolled for the common shapes."""
    array = bytes([0x90 | len(names)])  # a fixarray: every frame has fewer than 16 fields
    if not names:
        return lambda frame: b""
    if len(names) == 1:
        (only,) = encoders
        return lambda frame: array + only(getattr(frame, names[0]))
    values = operator.attrgetter(*names)
    if len(names) == 3:
        e0, e1, e2 = encoders

        def three(frame: Any) -> bytes:
            v0, v1, v2 = values(frame)
            return b"".join((array, e0(v0), e1(v1), e2(v2)))

        return three
    if len(names) == 4:
        f0, f1, f2, f3 = encoders

        def four(frame: Any) -> bytes:
            v0, v1, v2, v3 = values(frame)
            return b"".join((array, f0(v0), f1(v1), f2(v2), f3(v3)))

        return four
    return lambda frame: b"".join([array, *map(_call, encoders, values(frame))])


# class -> (type byte, body encoder)
_ENCODING: dict[type[Any], tuple[int, Callable[[Any], bytes]]] = {
    cls: (code, _body_encoder(tuple(cls.__dataclass_fields__), tuple(e for e, _ in fields)))
    for code, (cls, fields) in _SPECS.items()
}


def _body_decoder(cls: type[Any], checks: tuple[_Check, ...]) -> Callable[[list[Any]], Any]:
    """Fields (already counted) -> the frame; unrolled for the common shapes."""
    if len(checks) == 3 and checks[2] is _any:
        c0, c1 = checks[:2]

        def three(v: list[Any]) -> Any:
            return cls(c0(v[0]), c1(v[1]), v[2])

        return three
    if len(checks) == 4 and checks[3] is _any:
        d0, d1, d2 = checks[:3]

        def four(v: list[Any]) -> Any:
            return cls(d0(v[0]), d1(v[1]), d2(v[2]), v[3])

        return four
    return lambda v: cls(*map(_call, checks, v))


# type byte -> (class, field count, body decoder)
_DECODING: dict[int, tuple[type[Any], int, Callable[[list[Any]], Any]]] = {
    code: (cls, len(fields), _body_decoder(cls, tuple(dec for _, dec in fields)))
    for code, (cls, fields) in _SPECS.items()
}


# frame class -> the field naming the process it speaks for, which must be one
# of the sending peer's own (send and call frames: ``from_``, checked with
# their pair). A CallError speaks for its callee, a Down for the process that
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
# the msgpack array [from_, to] of the two identifiers (shapes as above) as one
# opaque byte string: a process sends to the same few recipients over and
# over, so each side maps the pair to and from identifier objects with one
# dict look-up instead of packing, unpacking and checking five fields per
# message. ``message`` is a codec term, except that a message that is a tuple
# (the usual shape: a tag and its data) travels as the array of its items
# with ``is_tuple`` true, which spares it the extension type's nested
# pack and unpack (a hook call each way).

_SEND_TYPES: dict[type[Any], int] = {
    PID: TYPE_SEND_PID,
    ProcessID: TYPE_SEND_NAME,
    Alias: TYPE_SEND_ALIAS,
}
# send frame class -> the type its ``to`` must have
_SEND_TO_TYPES: dict[type[Any], type[Any]] = {SendPID: PID, SendName: ProcessID, SendAlias: Alias}
# type byte -> (class, decoder of ``to``)
_SENDS: dict[int, tuple[type[Any], _Check]] = {
    TYPE_SEND_PID: (SendPID, _decode_pid),
    TYPE_SEND_NAME: (SendName, _decode_name),
    TYPE_SEND_ALIAS: (SendAlias, _decode_alias),
}
# (id(from_), id(to)) -> (from_, to, type byte, body prefix up to is_tuple):
# the entry holds both objects, so their ids stay theirs while cached.
# Bounded like the others.
SendEntry: TypeAlias = tuple[Any, Any, int, bytes]
_pairs_out: dict[tuple[int, int], SendEntry] = {}
# pair bytes -> (type byte, from_, to). A pair is valid for one type byte only.
_pairs_in: dict[bytes, tuple[int, PID, Any]] = {}
_tuple_new = tuple.__new__


def _bin_header(size: int) -> bytes:
    if size <= 0xFF:
        return bytes((0xC4, size))
    if size <= 0xFFFF:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")  # identifiers never come near 4 GiB


def _pair_bin(from_pid: PID, to: Any, to_type: type) -> bytes:
    """The (from_, to) pair as the bin field that send and call frames carry."""
    pair = b"\x92" + _ident_bytes(from_pid, PID) + _ident_bytes(to, to_type)
    return _bin_header(len(pair)) + pair


PairCache: TypeAlias = dict[bytes, tuple[int, PID, Any]]


def _known_pair(
    code: int, pair: bytes, cache: PairCache | None = None, peer: str | None = None
) -> tuple[int, PID, Any]:
    """(type byte, from_, to) of a pair that came in a frame of type ``code``.

    ``cache`` and ``peer`` are a decoder's own (see :class:`FrameDecoder`);
    without them the module's cache serves and the sender is not checked.
    """
    if cache is None:
        cache = _pairs_in
    hit = cache.get(pair)
    if hit is None or hit[0] != code:
        hit = _read_pair(code, pair, cache, peer)
    return hit


def _send_prefix(from_pid: Any, to: Any) -> SendEntry:
    """The ``_pairs_out`` entry for a pair not cached yet."""
    if type(from_pid) is not PID:
        raise ErrIncorrect(f"expected PID, got {_shape(from_pid)}")
    code = _SEND_TYPES.get(type(to))
    if code is None:
        raise ErrIncorrect(f"expected PID/ProcessID/Alias, got {_shape(to)}")
    entry = (from_pid, to, code, b"\x93" + _pair_bin(from_pid, to, type(to)))
    if len(_pairs_out) >= _CACHE_MAX:
        _pairs_out.clear()
    _pairs_out[(id(from_pid), id(to))] = entry
    return entry


def encode_send(from_pid: PID, to: Target, message: Any, order: int, max_size: int = 0) -> bytes:
    """``encode_frame`` of the send frame for ``to``'s type, without building it.

    A :class:`SendPID`, :class:`SendName` or :class:`SendAlias` from
    ``from_pid`` with ``message``, header included. ``order`` is the order
    byte (see :func:`order_byte`); errors as for :func:`encode_frame`.
    """
    entry, item = send_item(from_pid, to, message, order, max_size)
    return send_run(entry, order, [item])


def send_item(
    from_pid: PID, to: Target, message: Any, order: int, max_size: int = 0
) -> tuple[SendEntry, bytes]:
    """A send encoded in two parts: its pair entry and its item.

    The item (is_tuple and the message) is what a batch repeats; the hot path
    of every remote send queues it on a writer that merges bursts (see "send
    batches"), :func:`send_run` makes the frame. Errors as for
    :func:`encode_frame`, the size checked for the send on its own.
    """
    hit = _pairs_out.get((id(from_pid), id(to)))
    if hit is None or hit[0] is not from_pid or hit[1] is not to:
        hit = _send_prefix(from_pid, to)
    if not 0 <= order <= 255:
        raise ErrIncorrect(f"order byte out of range: {order}")
    if type(message) is tuple:  # the items follow as an array
        item = b"\xc3" + codec.encode(list(message))
    else:
        item = b"\xc2" + codec.encode(message)
    total = HEADER_SIZE + len(hit[3]) + len(item)
    if (max_size and total > max_size) or total > _MAX_TOTAL:
        raise too_large(total, max_size)
    return hit, item


def _read_pair(code: int, pair: bytes, cache: PairCache, peer: str | None) -> tuple[int, PID, Any]:
    """Decode and check a pair not cached yet (a send or call frame of type ``code``).

    With ``peer``, the sender must be one of the peer's processes: a link
    speaks only for its own node. Checked here, once per pair, since a
    decoder's cache holds only pairs that passed.
    """
    cls, decode_to = _PAIRED[code]
    ids = codec.decode(pair)
    if type(ids) is not list or len(ids) != 2:
        raise RemoteProtocolError(f"{cls.__name__} frame: expected a [from, to] pair")
    try:
        hit = (code, _decode_pid(ids[0]), decode_to(ids[1]))
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{cls.__name__} frame: {exc}") from None
    if peer is not None and hit[1].node != peer:
        raise ImpersonationError(cls.__name__, hit[1], peer)
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[pair] = hit
    return hit


def _send_fields(
    code: int, values: Any, cache: PairCache | None = None, peer: str | None = None
) -> Send:
    """A send frame of type ``code`` from its decoded body, fully checked."""
    if type(values) is list and len(values) == 3:
        pair, is_tuple, message = values
        if type(pair) is bytes:
            hit = _known_pair(code, pair, cache, peer)
            if is_tuple is True and type(message) is list:
                return (hit[1], hit[2], tuple(message))
            if is_tuple is False:
                return (hit[1], hit[2], message)
    raise RemoteProtocolError(
        f"{_SENDS[code][0].__name__} frame: expected [pair, is_tuple, message]"
    )


def _decode_send(
    code: int, body: bytes | bytearray, cache: PairCache | None = None, peer: str | None = None
) -> Any:
    """The named send frame (SendPID, SendName or SendAlias) of type ``code``."""
    return _tuple_new(_SENDS[code][0], _send_fields(code, codec.decode(body), cache, peer))


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
_CALLS: dict[int, tuple[type[Any], _Check, type[Any], bool]] = {
    TYPE_CALL_PID: (CallPID, _decode_pid, PID, True),
    TYPE_CALL_NAME: (CallName, _decode_name, ProcessID, True),
    TYPE_CALL_ALIAS: (CallAlias, _decode_alias, Alias, True),
    TYPE_CALL_RESPONSE: (CallResponse, _decode_pid, PID, False),
}
# type byte -> (class, decoder of ``to``) for every frame with a pair
_PAIRED: dict[int, tuple[type[Any], _Check]] = {
    **_SENDS,
    **{code: (cls, decode_to) for code, (cls, decode_to, _, _) in _CALLS.items()},
}
# (id(from_), id(to), type byte) -> (from_, to, body prefix up to the ref)
_call_pairs_out: dict[tuple[int, int, int], tuple[Any, Any, bytes]] = {}
_REF_BIN = b"\xc4\x10"  # bin 8 header for the 16 id bytes


def _call_prefix(code: int, from_pid: Any, to: Any) -> tuple[Any, Any, bytes]:
    """The ``_call_pairs_out`` entry for a pair not cached yet."""
    if type(from_pid) is not PID:
        raise ErrIncorrect(f"expected PID, got {_shape(from_pid)}")
    to_type = _CALLS[code][2]
    if type(to) is not to_type:
        raise ErrIncorrect(f"expected {to_type.__name__}, got {_shape(to)}")
    entry = (from_pid, to, b"\x94" + _pair_bin(from_pid, to, to_type))
    if len(_call_pairs_out) >= _CACHE_MAX:
        _call_pairs_out.clear()
    _call_pairs_out[(id(from_pid), id(to), code)] = entry
    return entry


def encode_call(
    code: int, from_pid: PID, to: Any, ref: Ref, term: Any, order: int, max_size: int = 0
) -> bytes:
    """``encode_frame`` of a call request or response (``code``), without building it.

    ``code`` is one of ``TYPE_CALL_PID``, ``TYPE_CALL_NAME``,
    ``TYPE_CALL_ALIAS`` (``term`` is the request) or ``TYPE_CALL_RESPONSE``
    (``term`` is the result); errors as for :func:`encode_frame`.
    """
    spec = _CALLS.get(code)
    if spec is None:
        raise ErrIncorrect(f"not a call frame type: {code}")
    hit = _call_pairs_out.get((id(from_pid), id(to), code))
    if hit is None or hit[0] is not from_pid or hit[1] is not to:
        hit = _call_prefix(code, from_pid, to)
    if not 0 <= order <= 255:
        raise ErrIncorrect(f"order byte out of range: {order}")
    if type(ref) is not Ref:
        raise ErrIncorrect(f"expected Ref, got {_shape(ref)}")
    owner = from_pid if spec[3] else to
    if ref.node == owner.node and ref.creation == owner.creation:
        try:
            ref_bytes = _REF_BIN + ref.id.to_bytes(_REF_ID_BYTES, "big")
        except OverflowError as exc:
            raise ErrIncorrect(f"{ref!r}: id does not fit {_REF_ID_BYTES} bytes") from exc
    else:
        ref_bytes = _ident_bytes(ref, Ref)
    if type(term) is tuple:
        flag, body = b"\xc3", codec.encode(list(term))
    else:
        flag, body = b"\xc2", codec.encode(term)
    prefix = hit[2]
    total = HEADER_SIZE + len(prefix) + len(ref_bytes) + 1 + len(body)
    if (max_size and total > max_size) or total > _MAX_TOTAL:
        raise too_large(total, max_size)
    return b"".join(
        (_HEADER_MV.pack(_MAGIC_VERSION, total, order, code), prefix, ref_bytes, flag, body)
    )


def _decode_call(
    code: int, body: bytes | bytearray, cache: PairCache | None = None, peer: str | None = None
) -> Any:
    """The call request or response of type ``code``, fully checked."""
    cls, _, _, owner_is_from = _CALLS[code]
    values = codec.decode(body)
    if type(values) is list and len(values) == 4:
        pair, ref, is_tuple, term = values
        if type(pair) is bytes:
            from_, to = _known_pair(code, pair, cache, peer)[1:]
            if type(ref) is bytes and len(ref) == _REF_ID_BYTES:
                owner = from_ if owner_is_from else to
                rid = int.from_bytes(ref, "big")
                call_ref = make_ref(owner.node, rid, owner.creation)
            else:
                try:
                    call_ref = _decode_ref(ref)
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
# encodes each message once (send_item); the writer keeps the items of the
# open burst and send_run turns them into bytes when the burst ends.

_BATCH_OF: dict[int, int] = {
    TYPE_SEND_PID: TYPE_SENDS_PID,
    TYPE_SEND_NAME: TYPE_SENDS_NAME,
    TYPE_SEND_ALIAS: TYPE_SENDS_ALIAS,
}
_BATCHES: dict[int, int] = {batch: send for send, batch in _BATCH_OF.items()}
BATCH_MAX = 1 << 16  # bytes: no batch outgrows this (nor the peer's limit)


def _array_header(count: int) -> bytes:
    if count <= 15:
        return bytes((0x90 | count,))
    if count <= 0xFFFF:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def send_run(entry: SendEntry, order: int, items: list[bytes]) -> bytes:
    """The frame for sends queued together: a plain send frame for one, else a batch."""
    prefix = entry[3]  # [array of 3][bin pair]
    if len(items) == 1:
        total = HEADER_SIZE + len(prefix) + len(items[0])
        return b"".join((_HEADER_MV.pack(_MAGIC_VERSION, total, order, entry[2]), prefix, items[0]))
    head = _array_header(1 + 2 * len(items)) + prefix[1:]
    body = b"".join(items)
    total = HEADER_SIZE + len(head) + len(body)
    header = _HEADER_MV.pack(_MAGIC_VERSION, total, order, _BATCH_OF[entry[2]])
    return b"".join((header, head, body))


def _batch_sends(
    code: int,
    values: Any,
    append: Callable[[Any], None],
    cache: PairCache | None = None,
    peer: str | None = None,
) -> None:
    """Append the sends of a batch frame of type ``code`` (its body decoded)."""
    send_code = _BATCHES[code]
    if type(values) is list and len(values) >= 3 and len(values) % 2 == 1:
        pair = values[0]
        if type(pair) is bytes:
            from_, to = _known_pair(send_code, pair, cache, peer)[1:]
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
        f"{_SENDS[send_code][0].__name__} batch: expected [pair, is_tuple, message, ...]"
    )


def decode_frames(
    frame_type: int,
    body: bytes | bytearray,
    cache: PairCache | None = None,
    peer: str | None = None,
) -> list[Frame]:
    """The frames in one frame of ``frame_type``: the sends of a batch, else one.

    Sends come out as their named frames (:class:`SendPID` and friends).
    Errors as for :func:`decode_frame`.
    """
    if frame_type not in _BATCHES:
        return [decode_frame(frame_type, body, cache, peer)]
    sends: list[Any] = []
    cls = _SENDS[_BATCHES[frame_type]][0]
    _batch_sends(frame_type, codec.decode(body), sends.append, cache, peer)
    return [_tuple_new(cls, send) for send in sends]


_KNOWN_TYPES = frozenset(_DECODING) | frozenset(_SENDS) | frozenset(_CALLS) | frozenset(_BATCHES)


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
    sender = frame[0] if isinstance(frame, tuple) else getattr(frame, "from_", None)
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
    call = _CALL_TYPES.get(type(frame))
    if call is not None:
        if order is None:
            order = frame_order(frame)
        f: Any = frame
        term = f.result if call == TYPE_CALL_RESPONSE else f.message
        try:
            return encode_call(call, f.from_, f.to, f.ref, term, order, max_size)
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
                raise ErrIncorrect(f"expected {to_type.__name__}, got {_shape(to)}")
            return encode_send(from_pid, to, message, order, max_size)
        assert spec is not None
        code, build = spec
        body = build(frame)
    except ErrIncorrect as exc:
        raise ErrIncorrect(f"{type(frame).__name__} frame: {exc}") from None
    total = HEADER_SIZE + len(body)
    if (max_size and total > max_size) or total > _MAX_TOTAL:
        raise too_large(total, max_size)
    return _HEADER.pack(MAGIC, VERSION, total, order, code) + body


def too_large(total: int, max_size: int) -> ErrTooLarge:
    """The error for a frame of ``total`` bytes over the peer's ``max_size`` (0: none)."""
    if max_size and total > max_size:
        return ErrTooLarge(f"frame of {total} bytes exceeds the peer's limit of {max_size}")
    return ErrTooLarge(f"frame of {total} bytes does not fit the 32-bit length")


def _call(check: _Check, value: Any) -> Any:
    return check(value)


def decode_frame(
    frame_type: int,
    body: bytes | bytearray,
    cache: PairCache | None = None,
    peer: str | None = None,
) -> Frame:
    """Build the frame of ``frame_type`` from its body bytes.

    Raises ``gen.RemoteProtocolError`` for an unknown type, a body that does not
    decode, or fields of the wrong number or shape. Exposed so that a receiver
    can split a stream on the loop (:meth:`FrameDecoder.next_raw`) and decode
    bodies elsewhere.
    """
    spec = _DECODING.get(frame_type)
    if spec is None:
        if frame_type in _SENDS:
            return _decode_send(frame_type, body, cache, peer)  # type: ignore[no-any-return]
        if frame_type in _CALLS:
            return _decode_call(frame_type, body, cache, peer)  # type: ignore[no-any-return]
        if frame_type in _BATCHES:
            raise ErrIncorrect("a send batch holds several frames: use decode_frames")
        raise RemoteProtocolError(f"unknown frame type {frame_type}")
    cls, count, build = spec
    if not count:
        if body:
            raise RemoteProtocolError(f"{cls.__name__} frame must have an empty body")
        return cls()  # type: ignore[no-any-return]
    values = codec.decode(body)
    if type(values) is not list or len(values) != count:
        raise RemoteProtocolError(f"{cls.__name__} frame: wrong field count")
    try:
        frame = build(values)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{cls.__name__} frame: {exc}") from None
    if peer is not None:
        speaker = _SPEAKER.get(cls)
        if speaker is not None and getattr(frame, speaker).node != peer:
            raise ImpersonationError(cls.__name__, getattr(frame, speaker), peer)
    return frame  # type: ignore[no-any-return]


# --- decoding a stream ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame split off the stream but not yet decoded."""

    order: int
    type: int
    body: bytes

    def decode(self) -> Frame:
        """The typed frame (see :func:`decode_frame`; a send batch is several)."""
        return decode_frame(self.type, self.body)

    def decode_all(self) -> list[Frame]:
        """The frames it holds (see :func:`decode_frames`)."""
        return decode_frames(self.type, self.body)


_COMPACT_AT = 64 * 1024


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
    decoder keeps its own cache of the sender/recipient pairs that passed
    that check.
    """

    __slots__ = ("_buf", "_error", "_max_size", "_pairs", "_peer", "_pending", "_pos")

    def __init__(self, max_size: int = 0, peer: str | None = None) -> None:
        if max_size < 0:
            raise ErrIncorrect("max_size must be >= 0")
        self._max_size = max_size
        self._peer = peer
        self._pairs: PairCache = {} if peer is not None else _pairs_in
        self._buf = bytearray()
        self._pos = 0
        self._error: Exception | None = None
        self._pending: list[Frame] = []  # the rest of a send batch next_frame opened

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
        split = self._split()
        if split is None:
            return None
        order, code, body = split
        return RawFrame(order, code, bytes(body))

    def _split(self) -> tuple[int, int, bytearray] | None:
        """(order, type, body copy) of the next whole frame, header checked."""
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
        if (
            magic != MAGIC
            or version != VERSION
            or code not in _KNOWN_TYPES
            or total < HEADER_SIZE
            or (self._max_size and total > self._max_size)
        ):
            self._refuse(magic, version, total, code)
        end = pos + total
        if len(buf) < end:
            return None
        self._pos = end
        return order, code, buf[pos + HEADER_SIZE : end]  # one copy

    def _refuse(self, magic: int, version: int, total: int, code: int) -> None:
        exc: RemoteProtocolError | ErrTooLarge
        if magic != MAGIC:
            exc = RemoteProtocolError(f"bad frame magic {magic}")
        elif version != VERSION:
            exc = RemoteProtocolError(f"unsupported frame version {version}")
        elif code not in _KNOWN_TYPES:
            exc = RemoteProtocolError(f"unknown frame type {code}")
        elif total < HEADER_SIZE:
            exc = RemoteProtocolError(f"frame length {total} is shorter than its header")
        else:
            exc = ErrTooLarge(f"frame of {total} bytes exceeds our limit of {self._max_size}")
        self._error = exc
        raise exc

    def next_frame(self) -> Frame | None:
        """The next decoded frame, or None when more data is needed.

        A send batch comes out one send frame at a time.
        """
        if self._pending:
            return self._pending.pop(0)
        split = self._split()
        if split is None:
            return None
        try:
            frames = decode_frames(split[1], split[2], self._pairs, self._peer)
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        self._pending = frames[1:]
        return frames[0]

    def drain(self, out: list[Frame]) -> None:
        """Append every whole frame buffered so far to ``out``, in order.

        The reader's fast path (one call per read). Send frames come out as
        plain ``(from_, to, message)`` tuples (:data:`Send`), the other frames
        as with :meth:`next_frame`. Keepalives are consumed, not appended:
        they carry nothing. It stops after a :class:`Close` (the last one
        appended; anything after it stays buffered, see :attr:`buffered`). On
        an error ``out`` holds the frames before the bad one, and the decoder
        is broken as with :meth:`next_frame`.
        """
        if self._error is not None:
            raise self._error
        if self._pending:
            out.extend(self._pending)
            self._pending = []
        buf = self._buf
        pos = self._pos
        end = len(buf)
        limit = self._max_size
        unpack = _HEADER_MV.unpack_from
        known = _KNOWN_TYPES
        sends = _SENDS
        batches = _BATCHES
        pairs = self._pairs
        peer = self._peer
        decode = codec.decode
        append = out.append
        try:
            while end - pos >= HEADER_SIZE:
                magic_version, total, _, code = unpack(buf, pos)
                if (
                    magic_version != _MAGIC_VERSION
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
                if code in sends:
                    values = decode(body)
                    # The common case inline: a known pair, then as _send_fields.
                    if type(values) is list and len(values) == 3:
                        pair, is_tuple, message = values
                        hit = pairs.get(pair) if type(pair) is bytes else None
                        if hit is not None and hit[0] == code:
                            if is_tuple is True and type(message) is list:
                                append((hit[1], hit[2], tuple(message)))
                                continue
                            if is_tuple is False:
                                append((hit[1], hit[2], message))
                                continue
                    append(_send_fields(code, values, pairs, peer))
                    continue
                if code in batches:
                    _batch_sends(code, decode(body), append, pairs, peer)
                    continue
                frame = decode_frame(code, body, pairs, peer)
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

    def __iter__(self) -> Iterator[Frame]:
        """Every whole frame buffered so far."""
        while (frame := self.next_frame()) is not None:
            yield frame
