"""The term codec: what a user may send, and what happens to what they may not."""

from __future__ import annotations

import dataclasses
import enum

import msgpack
import pytest

from ergo_py import gen
from ergo_py.net import codec


@gen.register_type
@dataclasses.dataclass(frozen=True)
class Order:
    item: str
    qty: int
    owner: gen.PID | None = None


def test_native_values_round_trip() -> None:
    value = [None, True, False, 0, -1, 2**63 - 1, 1.5, "text", b"\x00\xff", {"k": [1, 2]}]
    assert codec.copy(value) == value


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    out = codec.copy(("pong", [1, (2, 3)], {"t": (4,)}))
    assert out == ("pong", [1, (2, 3)], {"t": (4,)})
    assert type(out) is tuple
    assert type(out[1]) is list
    assert type(out[1][1]) is tuple


def test_tuple_keys_survive() -> None:
    assert codec.copy({(1, "a"): "v"}) == {(1, "a"): "v"}


def test_identifiers_round_trip_with_their_types() -> None:
    pid = gen.PID("a@localhost", 7, 1700000000)
    values = (
        gen.Atom("name"),
        pid,
        gen.ProcessID("pong", "b@localhost"),
        gen.Ref("a@localhost", 2**95 + 3, 1),
        gen.Alias("a@localhost", 2**95 + 3, 1),
    )
    out = codec.copy(values)
    assert out == values
    assert [type(v) for v in out] == [type(v) for v in values]


def test_ref_and_alias_with_same_fields_differ() -> None:
    assert gen.Ref("a@b", 1, 1) != gen.Alias("a@b", 1, 1)


def test_registered_dataclass_round_trips() -> None:
    order = Order("apple", 3, gen.PID("a@b", 1, 2))
    assert codec.copy(order) == order


def test_unregistered_dataclass_is_refused_with_a_hint() -> None:
    @dataclasses.dataclass
    class Secret:
        x: int

    with pytest.raises(gen.ErrUnsupportedType, match="register_type"):
        codec.encode(Secret(1))


def test_arbitrary_objects_are_refused() -> None:
    with pytest.raises(gen.ErrUnsupportedType):
        codec.encode({"x": object()})


def test_oversized_int_is_refused() -> None:
    with pytest.raises(gen.ErrUnsupportedType):
        codec.encode(2**70)


def test_encoder_recovers_after_a_refusal() -> None:
    with pytest.raises(gen.ErrUnsupportedType):
        codec.encode([1, object()])
    assert codec.copy([1, 2]) == [1, 2]


def test_int_enum_travels_as_its_value() -> None:
    class Color(enum.IntEnum):
        RED = 1

    assert codec.copy(Color.RED) == 1


def test_ergo_errors_keep_their_class() -> None:
    out = codec.copy(gen.ErrTimeout("slow"))
    assert type(out) is gen.ErrTimeout
    assert str(out) == "slow"


def test_foreign_exceptions_become_remote_exceptions() -> None:
    out = codec.copy(ValueError("bad"))
    assert isinstance(out, codec.RemoteException)
    assert out.type_name == "ValueError"
    assert out.message == "bad"


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never used
        b"\x92\x01",  # truncated array
        msgpack.packb(msgpack.ExtType(99, b"")),
        msgpack.packb(msgpack.ExtType(codec.EXT_PID, b"\x01")),
        msgpack.packb(msgpack.ExtType(codec.EXT_REGISTERED, msgpack.packb(["nope", []]))),
        msgpack.packb(msgpack.ExtType(codec.EXT_ATOM, b"\xff\xfe")),
        b"\x01\x02",  # trailing data
    ],
)
def test_malformed_bytes_raise_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(gen.RemoteProtocolError):
        codec.decode(data)


def test_copy_isolates_receiver_from_sender_mutation() -> None:
    sent = {"items": [1, 2]}
    received = codec.copy(sent)
    sent["items"].append(3)
    assert received == {"items": [1, 2]}


def test_cached_identifier_encodings_keep_ref_and_alias_apart() -> None:
    ref = gen.Ref("a@b", 7, 1)
    alias = gen.Alias("a@b", 7, 1)
    assert type(codec.copy(ref)) is gen.Ref
    assert type(codec.copy(alias)) is gen.Alias
    assert type(codec.copy(ref)) is gen.Ref


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 15, 16, 17, 200, 300, 70_000])
def test_a_top_level_tuple_is_packed_as_msgpack_packs_the_extension(size: int) -> None:
    """The tuple fast path writes the extension header itself: byte for byte msgpack's."""
    for value in (tuple(range(size)), (b"x" * size,)):
        payload = msgpack.packb(list(value), use_bin_type=True)
        assert codec.encode(value) == msgpack.packb(msgpack.ExtType(codec.EXT_TUPLE, payload))
        assert codec.decode(codec.encode(value)) == value


def test_a_refused_top_level_tuple_leaves_the_encoder_clean() -> None:
    with pytest.raises(gen.ErrUnsupportedType):
        codec.encode((1, object()))
    assert codec.copy((1, [2, (3,)])) == (1, [2, (3,)])
