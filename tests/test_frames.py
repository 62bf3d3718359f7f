"""The frame codec: every frame round-trips; limits and malformed input are typed errors."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack
import pytest
from framereading import as_drained, flat, read, run_frame

from ergo_py import gen
from ergo_py.gen import PID, Alias, Atom, ProcessID, Ref
from ergo_py.net import codec
from ergo_py.net import frames as fr
from ergo_py.net.frames import FrameDecoder, FrameEncoder, frame_order, order_byte
from ergo_py.net.frames.ids import CACHE_MAX

A = PID("a@localhost", 1000, 7)
B = PID("b@localhost", 2000, 9)
NAME = ProcessID("pong", "b@localhost")
ALIAS = Alias("b@localhost", 2**90 + 5, 9)
REF = Ref("a@localhost", 2**95 + 3, 7)
MSG = {"text": "hi", "pids": [A, B], "t": (1, Atom("ok")), "b": b"\x00\xff"}

ENC = FrameEncoder()  # a node has one; these tests play a single node
encode_frame = ENC.encode_frame

ALL_FRAMES: list[fr.Frame] = [
    fr.SendPID(A, B, MSG),
    fr.SendName(A, NAME, MSG),
    fr.SendAlias(A, ALIAS, MSG),
    fr.CallPID(A, B, REF, MSG),
    fr.CallName(A, NAME, REF, MSG),
    fr.CallAlias(A, ALIAS, REF, MSG),
    fr.CallResponse(B, A, REF, MSG),
    fr.CallError(B, A, REF, gen.ErrProcessUnknown("no such process")),
    fr.Exit(A, B, gen.ErrNoConnection("gone")),
    fr.Link(A, B),
    fr.Link(A, NAME),
    fr.Unlink(A, ALIAS),
    fr.Monitor(A, NAME, REF),
    fr.Demonitor(A, B, REF),
    fr.DownFrame(A, B, REF, Atom("normal")),
    fr.SpawnRequest(A, REF, "worker", "w1", (1, "two", A), False, {}),
    fr.SpawnRequest(A, REF, "worker", "", (), True, {"region": "eu", "n": 3}),
    fr.SpawnResult(A, REF, B, None),
    fr.SpawnResult(A, REF, None, gen.ErrNotAllowed("remote spawn disabled")),
    fr.Keepalive(),
    fr.Close(replaced=True),
    fr.Close(replaced=False),
]


def norm(value: object) -> object:
    """Frames with exceptions compared by (class, text): exceptions lack equality."""
    if isinstance(value, BaseException):
        return (type(value), str(value))
    if isinstance(value, list):
        return [norm(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), *(norm(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # the send frames
        return (type(value), *(norm(v) for v in value))
    return value


def _header(
    total: int, type_: int, *, magic: int = 78, version: int = fr.VERSION, order: int = 0
) -> bytes:
    return struct.pack(">BBIBB", magic, version, total, order, type_)


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_type_round_trips(frame: fr.Frame) -> None:
    dec = FrameDecoder()
    out = read(encode_frame(frame), dec)
    expected = as_drained([frame])  # a keepalive is consumed: it carries nothing
    assert norm(out) == norm([frame] if expected else [])
    assert [type(f) for f in out] == [type(frame)] * len(expected)
    assert dec.buffered == 0


def test_header_shape_is_magic_version_length_order_type() -> None:
    data = encode_frame(fr.SendPID(A, B, "x"))
    magic, version, total, order, type_ = struct.unpack(">BBIBB", data[:8])
    assert (magic, version, total, type_) == (78, fr.VERSION, len(data), fr.TYPE_SEND_PID)
    assert order == order_byte(A.id)


def test_keepalive_is_a_bare_eight_byte_header() -> None:
    assert encode_frame(fr.Keepalive()) == _header(8, fr.TYPE_KEEPALIVE)


def test_identifiers_keep_their_exact_types() -> None:
    (frame,) = read(encode_frame(fr.SendAlias(A, ALIAS, [REF, ALIAS])))
    assert isinstance(frame, fr.SendAlias)
    assert type(frame.to) is Alias
    assert [type(x) for x in frame.message] == [Ref, Alias]


def test_many_frames_in_one_chunk_come_out_in_order() -> None:
    sent = [fr.SendPID(A, B, i) for i in range(500)]
    assert read(b"".join(encode_frame(f) for f in sent)) == sent


def test_frames_split_at_every_byte_come_out_whole() -> None:
    data = b"".join(encode_frame(f) for f in ALL_FRAMES)
    dec = FrameDecoder()
    out: list[fr.Frame] = []
    for i in range(len(data)):
        out.extend(read(data[i : i + 1], dec))
    assert norm(out) == norm([f for f in ALL_FRAMES if type(f) is not fr.Keepalive])


def test_oversized_frame_is_refused_at_the_sender() -> None:
    frame = fr.SendPID(A, B, b"x" * 1000)
    size = len(encode_frame(frame))
    assert encode_frame(frame, max_size=size)
    with pytest.raises(gen.ErrTooLarge):
        encode_frame(frame, max_size=size - 1)


def test_zero_max_size_means_unlimited() -> None:
    assert encode_frame(fr.SendPID(A, B, b"x" * 100_000), max_size=0)


def test_decoder_refuses_an_oversized_header_before_the_body_arrives() -> None:
    dec = FrameDecoder(max_size=100)
    dec.receive_data(_header(101, fr.TYPE_SEND_PID))
    with pytest.raises(gen.ErrTooLarge):
        dec.drain([])
    with pytest.raises(gen.ErrTooLarge):  # broken for good
        dec.drain([])


def test_decoder_accepts_a_frame_exactly_at_its_limit() -> None:
    data = encode_frame(fr.SendPID(A, B, "x"))
    assert read(data, FrameDecoder(max_size=len(data))) == [fr.SendPID(A, B, "x")]


@pytest.mark.parametrize(
    "data",
    [
        _header(8, fr.TYPE_KEEPALIVE, magic=77),
        _header(8, fr.TYPE_KEEPALIVE, version=fr.VERSION + 1),
        _header(8, 55),
        _header(7, fr.TYPE_KEEPALIVE),
        _header(9, fr.TYPE_KEEPALIVE) + b"\x00",
        _header(9, fr.TYPE_SEND_PID) + b"\xc1",
    ],
    ids=["magic", "version", "type", "short-length", "keepalive-body", "bad-msgpack"],
)
def test_malformed_frames_raise_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(gen.RemoteProtocolError):
        read(data)


def _plain(value: object) -> object:
    """An identifier as the plain array a frame carries in its own fields."""
    if type(value) is PID:
        return [str(value.node), value.id, value.creation]
    if type(value) is ProcessID:
        return [str(value.name), str(value.node)]
    if type(value) in (Ref, Alias):
        assert isinstance(value, Ref)
        return [str(value.node), value.id.to_bytes(16, "big"), value.creation]
    return value


def _with_body(type_: int, fields: list[object]) -> bytes:
    body = codec.encode([_plain(f) for f in fields])
    return _header(8 + len(body), type_) + body


def test_frame_identifiers_are_plain_arrays_in_fixed_positions() -> None:
    data = encode_frame(fr.DownFrame(A, NAME, REF, (1, A)))
    body = msgpack.unpackb(data[8:], raw=False)
    assert body[:3] == [_plain(A), _plain(NAME), _plain(REF)]
    # The reason keeps its own types: a tuple holding a PID is an extension type.
    assert isinstance(body[3], msgpack.ExtType)
    assert codec.decode(codec.encode(body[3])) == (1, A)


def test_call_frames_carry_the_pair_and_only_the_id_of_the_callers_ref() -> None:
    request = msgpack.unpackb(encode_frame(fr.CallName(A, NAME, REF, (1, A)))[8:], raw=False)
    assert request[0] == codec.encode([_plain(A), _plain(NAME)])
    assert request[1] == REF.id.to_bytes(16, "big")  # REF is A's node incarnation's
    assert request[2] is True  # the request was a tuple: its items follow as an array
    assert codec.decode(codec.encode(request[3])) == [1, A]
    reply = msgpack.unpackb(encode_frame(fr.CallResponse(B, A, REF, "ok"))[8:], raw=False)
    assert reply[:4] == [
        codec.encode([_plain(B), _plain(A)]),
        REF.id.to_bytes(16, "big"),
        False,
        "ok",
    ]


@pytest.mark.parametrize(
    "frame",
    [
        fr.CallPID(A, B, REF, (1, [2])),
        fr.CallName(A, NAME, REF, [1, (2,)]),
        fr.CallAlias(A, ALIAS, REF, None),
        fr.CallResponse(B, A, REF, ("ok", B)),
        # Refs of another incarnation or node travel whole.
        fr.CallPID(A, B, Ref("a@localhost", 5, 6), ()),
        fr.CallName(A, NAME, Ref("z@localhost", 5, 7), 1),
        fr.CallResponse(B, A, Ref("b@localhost", 5, 9), []),
    ],
    ids=repr,
)
def test_call_frames_round_trip_with_every_type_kept(frame: fr.Frame) -> None:
    out = read(encode_frame(frame))
    assert out == [frame]
    got: Any = out[0]
    sent: Any = frame
    term = got.result if isinstance(got, fr.CallResponse) else got.message
    want = sent.result if isinstance(sent, fr.CallResponse) else sent.message
    assert type(term) is type(want)
    assert type(got.ref) is Ref and type(got.to) is type(sent.to)


def test_call_frames_refuse_wrong_identifiers_at_the_sender() -> None:
    for bad in (
        fr.CallPID(A, NAME, REF, 1),  # a name where a PID goes
        fr.CallName(A, B, REF, 1),
        fr.CallResponse(B, NAME, REF, 1),
        fr.CallPID(NAME, B, REF, 1),  # the caller is not a PID
        fr.CallPID(A, B, ALIAS, 1),  # an alias where the ref goes
        fr.CallPID(A, B, Ref("a@localhost", 2**130, 7), 1),  # an id beyond 16 bytes
    ):
        with pytest.raises(gen.ErrIncorrect):
            encode_frame(bad)  # type: ignore[arg-type]


def _call_data(type_: int, pair: object, ref: object, is_tuple: object, term: object) -> bytes:
    """A call frame with a hand-made body: [pair bytes, ref, is_tuple, term]."""
    if isinstance(pair, list):
        pair = codec.encode([_plain(f) for f in pair])
    body = msgpack.packb([pair, ref, is_tuple, term])
    return _header(8 + len(body), type_) + body


RID = REF.id.to_bytes(16, "big")


@pytest.mark.parametrize(
    "data",
    [
        _call_data(fr.TYPE_CALL_PID, [A, NAME], RID, False, 1),  # a name where a PID goes
        _call_data(fr.TYPE_CALL_NAME, [A, B], RID, False, 1),
        _call_data(fr.TYPE_CALL_RESPONSE, [B, NAME], RID, False, 1),
        _call_data(fr.TYPE_CALL_PID, [A, B], RID[:15], False, 1),  # a short ref id
        _call_data(fr.TYPE_CALL_PID, [A, B], 5, False, 1),  # a ref that is neither
        _call_data(fr.TYPE_CALL_PID, [A, B], ["a@localhost", b"x", 7], False, 1),
        _call_data(fr.TYPE_CALL_PID, [A, B], RID, 1, 1),  # is_tuple not a bool
        _call_data(fr.TYPE_CALL_PID, [A, B], RID, True, "not a list"),
        _call_data(fr.TYPE_CALL_PID, b"\xc1", RID, False, 1),  # pair bytes that do not decode
        _with_body(fr.TYPE_CALL_PID, [A, B, REF, 1]),  # the version 1 body
        _header(8, fr.TYPE_CALL_RESPONSE),  # no body at all
    ],
)
def test_malformed_call_frames_raise_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(gen.RemoteProtocolError):
        read(data)


def test_a_pair_cached_for_a_send_is_checked_again_for_a_call() -> None:
    dec = FrameDecoder()
    assert read(ENC.encode_send(A, NAME, 1, 1), dec) == [fr.SendName(A, NAME, 1)]
    with pytest.raises(gen.RemoteProtocolError):
        read(_call_data(fr.TYPE_CALL_PID, [A, NAME], RID, False, 1), dec)


def test_a_target_field_takes_each_identifier_shape() -> None:
    for target in (B, NAME, ALIAS):
        data = encode_frame(fr.Link(A, target))
        assert read(data) == [fr.Link(A, target)]
        assert msgpack.unpackb(data[8:], raw=False)[1] == _plain(target)


def test_identifier_fields_of_the_wrong_type_are_refused_at_the_sender() -> None:
    with pytest.raises(gen.ErrIncorrect):
        encode_frame(fr.SendPID(A, NAME, 1))  # type: ignore[arg-type]
    with pytest.raises(gen.ErrIncorrect):
        encode_frame(fr.CallPID(A, B, ALIAS, 1))
    with pytest.raises(gen.ErrIncorrect):
        encode_frame(fr.SendPID("a", B, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        _with_body(fr.TYPE_SEND_PID, [A, B]),  # too few fields
        _with_body(fr.TYPE_SEND_PID, [A, B, 1, 2]),  # too many
        _with_body(fr.TYPE_SEND_PID, ["a", B, 1]),  # sender not a PID
        _with_body(fr.TYPE_SEND_PID, [[str(A.node), "1", 7], B, 1]),  # PID id not an int
        _with_body(fr.TYPE_SEND_PID, [[str(A.node), 1, 7, 8], B, 1]),  # PID of four fields
        _with_body(fr.TYPE_SEND_NAME, [A, B, 1]),  # name target not a ProcessID
        _with_body(fr.TYPE_SEND_ALIAS, [A, [str(A.node), b"short", 7], 1]),  # alias id size
        _with_body(fr.TYPE_CALL_PID, [A, B, B, 1]),  # a PID is not a Ref
        _with_body(fr.TYPE_LINK, [A, 5]),
        _with_body(fr.TYPE_LINK, [A, [1, 2]]),  # a name of the wrong types
        _with_body(fr.TYPE_SPAWN_REQUEST, [A, REF, "f", "", 3]),
        _with_body(fr.TYPE_SPAWN_RESULT, [A, REF, "pid", None]),
        # Identifiers as extension types where the frame wants plain arrays:
        _header(8 + len(codec.encode([A, B, 1])), fr.TYPE_SEND_PID) + codec.encode([A, B, 1]),
    ],
)
def test_wrong_field_shapes_raise_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(gen.RemoteProtocolError):
        read(data)


# --- the send frames' own layout ---------------------------------------------------


def _send_data(type_: int, pair: object, is_tuple: object, message: object) -> bytes:
    """A send frame with a hand-made body: [pair bytes, is_tuple, message]."""
    if isinstance(pair, list):
        pair = codec.encode([_plain(f) for f in pair])
    body = msgpack.packb([pair, is_tuple, message])
    return _header(8 + len(body), type_) + body


@pytest.mark.parametrize("message", [(1, "a"), [1, "a"], (), [], ((1,), [2]), "x", None])
@pytest.mark.parametrize("to", [B, NAME, ALIAS], ids=repr)
def test_send_frames_keep_tuples_and_lists_apart(
    to: PID | ProcessID | Alias, message: object
) -> None:
    (out,) = read(ENC.encode_send(A, to, message, 3))
    assert isinstance(out, fr.SendPID | fr.SendName | fr.SendAlias)
    assert (out.from_, out.to, out.message) == (A, to, message)
    assert type(out.to) is type(to)
    assert type(out.message) is type(message)
    if isinstance(message, tuple) and message:
        assert [type(v) for v in out.message] == [type(v) for v in message]


def test_encode_send_is_encode_frame_of_the_matching_frame() -> None:
    assert ENC.encode_send(A, B, MSG, 9) == encode_frame(fr.SendPID(A, B, MSG), order=9)
    assert ENC.encode_send(A, NAME, MSG, 9) == encode_frame(fr.SendName(A, NAME, MSG), order=9)
    assert ENC.encode_send(A, ALIAS, MSG, 9) == encode_frame(fr.SendAlias(A, ALIAS, MSG), order=9)


def test_send_frames_from_fresh_identifier_objects_decode_alike() -> None:
    """The pair caches go by object identity one way, by bytes the other."""
    dec = FrameDecoder()
    for i in range(3):
        sender = PID("a@localhost", 1000, 7)
        name = ProcessID("pong", "b@localhost")
        assert read(ENC.encode_send(sender, name, i, 1), dec) == [fr.SendName(A, NAME, i)]


def test_send_frames_stay_right_past_the_cache_bounds() -> None:
    pids = [PID("a@localhost", i, 7) for i in range(CACHE_MAX + 10)]
    dec = FrameDecoder()
    for pid in pids:
        dec.receive_data(ENC.encode_send(pid, B, pid.id, 1))
    out: list[fr.Frame] = []
    dec.drain(out)
    assert out == [fr.SendPID(pid, B, pid.id) for pid in pids]


def test_encode_send_refuses_what_encode_frame_refuses() -> None:
    with pytest.raises(gen.ErrIncorrect):
        ENC.encode_send(A, REF, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(gen.ErrIncorrect):
        ENC.encode_send(NAME, B, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(gen.ErrIncorrect):
        ENC.encode_send(A, B, 1, 256)
    with pytest.raises(gen.ErrUnsupportedType):
        ENC.encode_send(A, B, (1, object()), 1)
    size = len(ENC.encode_send(A, B, b"x" * 100, 1))
    with pytest.raises(gen.ErrTooLarge):
        ENC.encode_send(A, B, b"x" * 100, 1, max_size=size - 1)


@pytest.mark.parametrize(
    "data",
    [
        _send_data(fr.TYPE_SEND_PID, ["a", B], False, 1),  # sender not a PID
        _send_data(fr.TYPE_SEND_PID, [[str(A.node), "1", 7], B], False, 1),  # PID id
        _send_data(fr.TYPE_SEND_PID, [A, NAME], False, 1),  # a name where a PID goes
        _send_data(fr.TYPE_SEND_NAME, [A, B], False, 1),  # a PID where a name goes
        _send_data(fr.TYPE_SEND_ALIAS, [A, B], False, 1),  # a PID where an alias goes
        _send_data(fr.TYPE_SEND_ALIAS, [A, [str(A.node), b"short", 7]], False, 1),
        _send_data(fr.TYPE_SEND_PID, [A], False, 1),  # a pair of one
        _send_data(fr.TYPE_SEND_PID, [A, B, B], False, 1),  # a pair of three
        _send_data(fr.TYPE_SEND_PID, b"\xc1", False, 1),  # pair bytes that do not decode
        _send_data(fr.TYPE_SEND_PID, codec.encode([_plain(A), _plain(B)]) + b"\x00", False, 1),
        _send_data(fr.TYPE_SEND_PID, codec.encode([A, B]), False, 1),  # extension types
        _send_data(fr.TYPE_SEND_PID, [A, B], 1, 1),  # is_tuple not a bool
        _send_data(fr.TYPE_SEND_PID, [A, B], None, [1]),
        _send_data(fr.TYPE_SEND_PID, [A, B], True, "not a list"),
        _send_data(fr.TYPE_SEND_PID, [A, B], True, {"k": 1}),
        _with_body(fr.TYPE_SEND_PID, [A, B, 1]),  # the version 1 body
        _with_body(fr.TYPE_SEND_PID, [A, B]),
        _header(8, fr.TYPE_SEND_PID),  # no body at all
        _header(9, fr.TYPE_SEND_PID) + b"\xc1",
    ],
)
def test_malformed_send_frames_raise_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(gen.RemoteProtocolError):
        read(data)


def test_a_pair_cached_for_one_send_type_is_refused_for_another() -> None:
    good = ENC.encode_send(A, B, 1, 1)
    dec = FrameDecoder()
    assert read(good, dec) == [fr.SendPID(A, B, 1)]
    as_alias = good[:7] + bytes([fr.TYPE_SEND_ALIAS]) + good[8:]
    with pytest.raises(gen.RemoteProtocolError):
        read(as_alias, dec)


def test_drain_yields_send_frames_as_plain_tuples() -> None:
    dec = FrameDecoder()
    dec.receive_data(b"".join(ENC.encode_send(A, to, (1, [2]), 1) for to in (B, NAME, ALIAS)))
    out: list[fr.Frame] = []
    dec.drain(out)
    assert [type(f) for f in out] == [tuple, tuple, tuple]
    assert out == [(A, B, (1, [2])), (A, NAME, (1, [2])), (A, ALIAS, (1, [2]))]
    assert [type(f[1]) for f in out if isinstance(f, tuple)] == [PID, ProcessID, Alias]


def test_a_plain_send_tuple_encodes_and_orders_as_its_named_frame() -> None:
    assert encode_frame((A, NAME, 1)) == encode_frame(fr.SendName(A, NAME, 1))
    assert frame_order((A, B, 1)) == frame_order(fr.SendPID(A, B, 1)) == order_byte(A.id)
    with pytest.raises(gen.ErrIncorrect):
        encode_frame((A, REF, 1))  # type: ignore[arg-type]
    with pytest.raises(gen.ErrIncorrect):
        encode_frame((A, B))  # type: ignore[arg-type]


def test_drain_consumes_keepalives_and_stops_after_a_close() -> None:
    frames = [fr.SendPID(A, B, 1), fr.Keepalive(), fr.Link(A, B), fr.Close(replaced=False)]
    after = encode_frame(fr.SendPID(A, B, 2))
    dec = FrameDecoder()
    dec.receive_data(b"".join(encode_frame(f) for f in frames) + after)
    out: list[fr.Frame] = []
    dec.drain(out)
    assert out == [fr.SendPID(A, B, 1), fr.Link(A, B), fr.Close(replaced=False)]
    assert dec.buffered == len(after)
    assert dec.messages == 2  # keepalives and the Close carry nothing for the node


def test_drain_keeps_the_frames_before_a_bad_one_and_breaks() -> None:
    dec = FrameDecoder()
    dec.receive_data(ENC.encode_send(A, B, 1, 1) + _header(9, fr.TYPE_SEND_PID) + b"\xc1")
    out: list[fr.Frame] = []
    with pytest.raises(gen.RemoteProtocolError):
        dec.drain(out)
    assert out == [fr.SendPID(A, B, 1)]
    with pytest.raises(gen.RemoteProtocolError):
        dec.drain(out)


def test_drain_waits_for_the_rest_of_a_split_frame() -> None:
    data = ENC.encode_send(A, B, "x" * 100, 1)
    dec = FrameDecoder()
    out: list[fr.Frame] = []
    dec.receive_data(data[:5])
    dec.drain(out)
    dec.receive_data(data[5:40])
    dec.drain(out)
    assert out == [] and dec.buffered == 40
    dec.receive_data(data[40:])
    dec.drain(out)
    assert out == [fr.SendPID(A, B, "x" * 100)] and dec.buffered == 0


def test_body_that_is_not_a_list_raises_remote_protocol_error() -> None:
    body = msgpack.packb({"a": 1})
    with pytest.raises(gen.RemoteProtocolError):
        read(_header(8 + len(body), fr.TYPE_EXIT) + body)


@pytest.mark.parametrize("sender_id", [0, 1, 254, 255, 510, 255 * 1000, 2**63 - 1])
def test_order_byte_is_never_zero_for_an_ordered_sender(sender_id: int) -> None:
    assert 1 <= order_byte(sender_id) <= 255


def test_frames_from_one_sender_share_one_order_byte() -> None:
    sender = PID("a@localhost", 255, 7)
    orders = {
        frame_order(fr.SendPID(sender, B, 1)),
        frame_order(fr.SendName(sender, NAME, 1)),
        frame_order(fr.Exit(sender, B, "x")),
        frame_order(fr.DownFrame(B, sender, REF, "x")),
    }
    assert orders == {order_byte(255)}
    assert 0 not in orders


def test_keepalive_is_unordered() -> None:
    assert frame_order(fr.Keepalive()) == 0


def test_explicit_order_overrides_the_default() -> None:
    data = encode_frame(fr.SendPID(A, B, 1), order=0)
    assert data[6] == 0
    with pytest.raises(gen.ErrIncorrect):
        encode_frame(fr.SendPID(A, B, 1), order=256)


def test_encoding_something_that_is_not_a_frame_is_refused() -> None:
    with pytest.raises(gen.ErrIncorrect):
        encode_frame("not a frame")  # type: ignore[arg-type]


def test_unsupported_message_type_raises_at_the_sender() -> None:
    with pytest.raises(gen.ErrUnsupportedType):
        encode_frame(fr.SendPID(A, B, object()))


def _field_names(frame: fr.Frame) -> list[str]:
    if isinstance(frame, tuple):  # the send frames are named tuples
        return list(frame._fields)
    return [f.name for f in dataclasses.fields(frame)]


@pytest.mark.parametrize("frame", [f for f in ALL_FRAMES if _field_names(f)], ids=repr)
def test_frames_are_immutable(frame: fr.Frame) -> None:
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError is one
        setattr(frame, _field_names(frame)[0], 2)


def test_a_broken_decoder_refuses_further_data() -> None:
    dec = FrameDecoder()
    dec.receive_data(_header(8, fr.TYPE_KEEPALIVE, magic=77))
    with pytest.raises(gen.RemoteProtocolError):
        dec.drain([])
    with pytest.raises(gen.RemoteProtocolError):
        dec.receive_data(encode_frame(fr.Keepalive()))


def test_exit_from_a_name_can_be_ordered_behind_the_ended_process() -> None:
    frame = fr.Exit(NAME, A, "normal")
    assert frame_order(frame) == 0
    data = encode_frame(frame, order=order_byte(B.id))
    assert data[6] == order_byte(B.id)  # the header's order byte
    assert read(data) == [frame]


def test_a_long_stream_in_odd_sized_chunks_yields_every_frame() -> None:
    frame = fr.SendPID(A, B, "x" * 50)
    data = encode_frame(frame) * 5000
    dec = FrameDecoder()
    got = 0
    for i in range(0, len(data), 997):
        got += len(read(data[i : i + 997], dec))
        assert dec.buffered < len(encode_frame(frame))
    assert got == 5000


# --- send batches ---------------------------------------------------------------------


@pytest.mark.parametrize("to", [B, NAME, ALIAS], ids=repr)
def test_a_run_of_sends_is_one_batch_frame_that_reads_back_as_the_sends(
    to: PID | ProcessID | Alias,
) -> None:
    messages: list[object] = [(1, "a"), [1, "a"], None, ((2,), [3]), "x"]
    data = run_frame(ENC, A, to, messages, 3)
    assert data[7] in (fr.TYPE_SENDS_PID, fr.TYPE_SENDS_NAME, fr.TYPE_SENDS_ALIAS)
    dec = FrameDecoder()
    dec.receive_data(data + encode_frame(fr.Keepalive()))
    out: list[fr.Frame] = []
    dec.drain(out)
    assert [type(f) for f in out] == [gen.SendBatch]  # one event for the burst
    assert dec.messages == len(messages)
    assert flat(out) == [(A, to, m) for m in messages]
    sent: list[Any] = [f[2] for f in flat(out) if isinstance(f, tuple)]
    assert [type(m) for m in sent] == [type(m) for m in messages]


def test_a_run_of_one_is_a_plain_send_frame() -> None:
    assert run_frame(ENC, A, B, [(1, 2)], 9) == ENC.encode_send(A, B, (1, 2), 9)


def test_send_item_refuses_what_encode_send_refuses() -> None:
    with pytest.raises(gen.ErrIncorrect):
        ENC.send_item(A, REF, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(gen.ErrUnsupportedType):
        ENC.send_item(A, B, object(), 1)
    size = len(ENC.encode_send(A, B, b"x" * 100, 1))
    with pytest.raises(gen.ErrTooLarge):
        ENC.send_item(A, B, b"x" * 100, 1, max_size=size - 1)
    ENC.send_item(A, B, b"x" * 100, 1, max_size=size)


def _batch_data(type_: int, pair: object, *items: object) -> bytes:
    if isinstance(pair, list):
        pair = codec.encode([_plain(f) for f in pair])
    body = msgpack.packb([pair, *items])
    return _header(8 + len(body), type_) + body


@pytest.mark.parametrize(
    "data",
    [
        _batch_data(fr.TYPE_SENDS_PID, [A, B]),  # no sends at all
        _batch_data(fr.TYPE_SENDS_PID, [A, B], False),  # half a send
        _batch_data(fr.TYPE_SENDS_PID, [A, B], False, 1, True),
        _batch_data(fr.TYPE_SENDS_PID, [A, B], False, 1, 1, 2),  # is_tuple not a bool
        _batch_data(fr.TYPE_SENDS_PID, [A, B], True, "not a list"),
        _batch_data(fr.TYPE_SENDS_PID, [A, NAME], False, 1),  # a name where a PID goes
        _batch_data(fr.TYPE_SENDS_NAME, [A, B], False, 1),
        _batch_data(fr.TYPE_SENDS_PID, b"\xc1", False, 1),
        _header(8, fr.TYPE_SENDS_ALIAS),
    ],
)
def test_malformed_batches_raise_remote_protocol_error_and_deliver_nothing_of_them(
    data: bytes,
) -> None:
    dec = FrameDecoder()
    dec.receive_data(ENC.encode_send(A, B, "before", 1) + data)
    out: list[fr.Frame] = []
    with pytest.raises(gen.RemoteProtocolError):
        dec.drain(out)
    assert [f[2] for f in out] == ["before"]  # type: ignore[index]
