"""Frame bodies: each frame type's layout, and a node's :class:`FrameEncoder`.

Most frames have the generic layout: one msgpack array of the frame's
fields in the order its class declares them, identifiers as in
:mod:`~ergo_py.net.frames.ids`, the other fields (a message, a reason, a
result, spawn arguments) terms packed with :mod:`ergo_py.net.codec`, so that
PIDs, refs, tuples, registered dataclasses and exceptions *inside* them
cross the wire as themselves. The send frames, call requests and responses
(most of the traffic) and send batches have layouts of their own, described
where they are defined below.

Encoding goes through a :class:`FrameEncoder`, which owns the caches that
make the hot paths cheap; each node has one. Decoding is driven by
``stream.FrameDecoder``; the functions here take its ``IdDecoder``.

(Just over 600 lines: a sixth of it is the import list of type bytes, and
the four layouts share the encoder's caches and the pair helpers, so they
stay together.)
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import repeat
from typing import Any, TypeAlias

from ergo_py.gen.errors import ErrIncorrect, ErrTooLarge, ImpersonationError, RemoteProtocolError
from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref, make_ref
from ergo_py.gen.node import SendBatch
from ergo_py.net import codec
from ergo_py.net.frames.ids import (
    CACHE_MAX,
    REF_ID_BYTES,
    Check,
    Encode,
    IdDecoder,
    IdEncoder,
    encode_optional_pid,
    encoder,
    ref_id_bytes,
    shape,
)
from ergo_py.net.frames.types import (
    HEADER,
    HEADER_MV,
    HEADER_SIZE,
    MAGIC,
    MAGIC_VERSION,
    MAX_TOTAL,
    TYPE_CALL_ALIAS,
    TYPE_CALL_ERROR,
    TYPE_CALL_NAME,
    TYPE_CALL_PID,
    TYPE_CALL_RESPONSE,
    TYPE_CLOSE,
    TYPE_DEMONITOR,
    TYPE_DOWN,
    TYPE_EXIT,
    TYPE_KEEPALIVE,
    TYPE_LINK,
    TYPE_MONITOR,
    TYPE_SEND_ALIAS,
    TYPE_SEND_NAME,
    TYPE_SEND_PID,
    TYPE_SENDS_ALIAS,
    TYPE_SENDS_NAME,
    TYPE_SENDS_PID,
    TYPE_SPAWN_REQUEST,
    TYPE_SPAWN_RESULT,
    TYPE_UNLINK,
    VERSION,
    CallAlias,
    CallError,
    CallName,
    CallPID,
    CallResponse,
    Close,
    Demonitor,
    DownFrame,
    Exit,
    Frame,
    Keepalive,
    Link,
    Monitor,
    SendAlias,
    SendName,
    SendPID,
    SpawnRequest,
    SpawnResult,
    Target,
    Unlink,
    frame_order,
)

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
    TYPE_DOWN: (DownFrame, (_PID, _TARGET, _REF, _TERM)),
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
    DownFrame: "target",
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
# instead of a header, an unpack and a pair look-up per message, and hands
# it on as one ``gen.SendBatch``. The sender encodes each message once
# (FrameEncoder.send_item); the writer keeps the items of the open burst and
# send_run turns them into bytes when the burst ends.

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


def read_batch(code: int, values: Any, ids: IdDecoder) -> SendBatch:
    """The sends of a batch frame of type ``code`` (its body decoded), as one event.

    All or nothing: a malformed batch raises ``gen.RemoteProtocolError``.
    """
    send_code = BATCHES[code]
    if type(values) is list and len(values) >= 3 and len(values) % 2 == 1:
        pair = values[0]
        if type(pair) is bytes:
            from_, to = _known_pair(send_code, pair, ids)[1:]
            messages: list[Any] = []
            append = messages.append
            it = iter(values)
            next(it)  # the pair
            for is_tuple, message in zip(it, it, strict=True):
                if is_tuple is True and type(message) is list:
                    append(tuple(message))
                elif is_tuple is False:
                    append(message)
                else:
                    break
            else:
                return SendBatch(from_, to, messages)
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

    __slots__ = ("_calls", "_ids", "_last", "_sends")

    def __init__(self) -> None:
        self._ids = IdEncoder()
        # (id(from_), id(to)) -> SendEntry
        self._sends: dict[tuple[int, int], SendEntry] = {}
        # The entry send_item used last: a burst repeats it, and two identity
        # checks are cheaper than the key tuple, its hash and the look-up.
        # (Read and replaced whole, so any thread may use it.)
        self._last: SendEntry = (None, None, 0, b"")
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
        hit = self._last
        if hit[0] is not from_pid or hit[1] is not to:
            cached = self._sends.get((id(from_pid), id(to)))
            if cached is None or cached[0] is not from_pid or cached[1] is not to:
                cached = self._send_prefix(from_pid, to)
            hit = self._last = cached
        if not 0 <= order <= 255:
            raise ErrIncorrect(f"order byte out of range: {order}")
        item = codec.encode_item(message)  # a tuple's items follow as an array
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
            try:  # ids.ref_id_bytes, inline: this runs per call and per reply
                ref_bytes = _REF_BIN + ref.id.to_bytes(REF_ID_BYTES, "big")
            except OverflowError:
                ref_bytes = _REF_BIN + ref_id_bytes(ref)  # raises the error
        else:
            ref_bytes = self._ids.packed(ref, Ref)
        item = codec.encode_item(term)
        prefix = hit[2]
        total = HEADER_SIZE + len(prefix) + len(ref_bytes) + len(item)
        if (max_size and total > max_size) or total > MAX_TOTAL:
            raise too_large(total, max_size)
        return b"".join(
            (HEADER_MV.pack(MAGIC_VERSION, total, order, code), prefix, ref_bytes, item)
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
