"""EDF, Ergo's data format (net/ergo/edf.py): round trips, Go's layouts, and hostile bytes."""

from __future__ import annotations

import contextlib
import datetime as dt
import struct
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ergo_py import gen
from ergo_py.gen.errors import ErrUnsupportedType, RemoteProtocolError
from ergo_py.net.ergo import edf

atoms = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255).map(gen.Atom)
node_names = st.sampled_from(["go@localhost", "py@localhost", "a@b"])
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
i64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
refs = st.builds(gen.Ref, node_names, st.integers(0, (1 << 192) - 1), i64)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False),
    st.text(max_size=50),
    atoms,
    st.binary(max_size=50),
    st.builds(gen.PID, node_names, u64, i64),
    st.builds(gen.ProcessID, atoms, node_names),
    refs,
    st.builds(gen.Alias, node_names, st.integers(0, (1 << 192) - 1), i64),
)
keys = st.one_of(st.integers(-1000, 1000), st.text(max_size=10), atoms)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)


# What a Go peer learns from our handshake: the numbers of the errors we send by number.
OURS = edf.Caches(errors={ident: text for text, ident in edf.ERROR_IDS.items()})


def roundtrip(value: Any) -> Any:
    data = edf.encode(value)
    decoded, used = edf.decode(data, OURS)
    assert used == len(data)
    return decoded


@given(values)
@settings(max_examples=150, deadline=None)
def test_values_survive_a_round_trip(value: Any) -> None:
    assert roundtrip(value) == value


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_hostile_bytes_raise_only_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        edf.decode(data)


def test_layouts_match_go() -> None:
    # What Go's edf.Encode writes for the same values (see ergo/net/edf/encode.go).
    assert edf.encode(1) == b"\x96" + struct.pack(">q", 1)
    assert edf.encode("hi") == b"\x8d\x00\x02hi"
    assert edf.encode(gen.Atom("ok")) == b"\x8c\x00\x02ok"
    assert edf.encode(True) == b"\x91\x01"
    assert edf.encode(None) == b"\xff"
    pid = gen.PID("n@h", 7, 9)
    assert edf.encode(pid) == b"\xaa\x00\x03n@h" + struct.pack(">Qq", 7, 9)
    assert edf.encode(gen.ProcessID("x", "n@h")) == b"\xab\x00\x03n@h\x00\x01x"
    # []any{1}: the type written once, then the items with their own tags.
    assert edf.encode([1]) == b"\x82\x00\x02\x9d\x84\x9d\x00\x00\x00\x01\x96" + bytes(7) + b"\x01"


def test_tuples_travel_as_lists() -> None:
    assert roundtrip((1, "a")) == [1, "a"]


def test_errors_map_to_gen_exceptions_and_reasons_to_atoms() -> None:
    assert roundtrip(gen.ErrProcessUnknown("whatever")).__class__ is gen.ErrProcessUnknown
    assert isinstance(roundtrip(RuntimeError("boom")), edf.RemoteError)
    assert str(roundtrip(RuntimeError("boom"))) == "boom"
    # Standard errors go by number (the table our handshake announces)...
    out = bytearray()
    edf.encode_value(out, "error", gen.ErrTimeout("x"))
    ident = edf.ERROR_IDS["timed out"]
    assert bytes(out) == struct.pack(">H", ident)
    # ...and the peer's numbers decode through its own table.
    caches = edf.Caches(errors={ident: "normal"})
    value, _ = edf.decode(b"\x9c" + struct.pack(">H", ident), caches)
    assert value == gen.Atom("normal")


def test_cached_atoms_and_types_decode_with_the_peers_tables() -> None:
    caches = edf.Caches(atoms={300: "go@localhost"})
    data = b"\xaa" + struct.pack(">H", 300) + struct.pack(">Qq", 1, 2)
    assert edf.decode(data, caches)[0] == gen.PID("go@localhost", 1, 2)
    with pytest.raises(RemoteProtocolError, match="atom cache id 300"):
        edf.decode(data)


def test_time_round_trips_in_go_format() -> None:
    moment = dt.datetime(2026, 5, 17, 10, 30, 5, 123456, tzinfo=dt.UTC)
    assert roundtrip(moment) == moment
    east = moment.astimezone(dt.timezone(dt.timedelta(hours=3)))
    back = roundtrip(east)
    assert back == east and back.utcoffset() == dt.timedelta(hours=3)
    with pytest.raises(ErrUnsupportedType, match="naive"):
        edf.encode(dt.datetime(2026, 1, 1))


@gen.register_type
@dataclass(frozen=True)
class Inner:
    label: str
    count: Annotated[int, "int32"]


@dataclass(frozen=True)
class Order:
    who: gen.PID
    items: list[Inner]
    prices: dict[str, float]
    note: Any
    blob: bytes


gen.register_type(Inner, name="#example.com/shop/Inner")
gen.register_type(Order, name="#example.com/shop/Order")


def test_registered_structs_go_by_their_go_name_with_typed_fields() -> None:
    order = Order(gen.PID("a@b", 1, 2), [Inner("x", 3)], {"p": 1.5}, [1, "two"], b"\x00")
    data = edf.encode(order)
    name = b"#example.com/shop/Order"
    assert data.startswith(b"\x83" + struct.pack(">H", len(name)) + name)
    # Inner's count is an int32 (4 bytes), as a Go struct with an int32 field has it.
    assert b"\x00\x01x\x00\x00\x00\x03" in data
    assert roundtrip(order) == order


def test_unregistered_or_unknown_types_are_refused_clearly() -> None:
    class Plain:
        pass

    with pytest.raises(ErrUnsupportedType, match="register"):
        edf.encode(Plain())
    name = b"#nowhere/Type"
    with pytest.raises(RemoteProtocolError, match="register a dataclass"):
        edf.decode(b"\x83" + struct.pack(">H", len(name)) + name)


def test_limits_of_go_types_are_checked() -> None:
    with pytest.raises(gen.ErrTooLarge):
        edf.encode("x" * 70_000)
    with pytest.raises(gen.ErrTooLarge):
        edf.encode(gen.Atom("a" * 300))
    with pytest.raises(ErrUnsupportedType, match="64 bits"):
        edf.encode(1 << 64)


def test_deep_nesting_is_refused_both_ways() -> None:
    deep: Any = 1
    for _ in range(edf.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(gen.ErrTooDeep):
        edf.encode(deep)
    one = b"\x82\x00\x02\x9d\x84\x9d\x00\x00\x00\x01"
    with pytest.raises(RemoteProtocolError, match="deeper"):
        edf.decode(one * (edf.MAX_DEPTH + 5) + b"\xff")


def test_a_spawn_request_round_trips_with_go_field_order() -> None:
    """MessageSpawn with gen.ProcessOptionsExtra: every field back, Go's names on the wire."""
    from ergo_py.net.ergo import spawn

    parent = gen.PID("py@host", 7, 3)
    request = spawn.spawn_request(
        "worker", parent, gen.Ref("py@host", 99, 3), (1, "two"), register="w", env={"k": 1.5}
    )
    data = edf.encode(request)
    assert b"#ergo.services/ergo/net/proto/MessageSpawn" in data
    value, end = edf.decode(data)
    assert value == request and end == len(data)
    assert value.options.parent_pid == parent and value.options.args == [1, "two"]
