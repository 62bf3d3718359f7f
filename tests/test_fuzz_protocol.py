"""Fuzzing the sans-IO protocol core: nothing but typed protocol errors escape.

Random bytes, random msgpack bodies behind valid headers, mutated transcripts
and random splits of valid streams go into the frame decoder and both
handshake machines. Example counts are bounded so the module stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import struct
from typing import Any

import msgpack
from framereading import as_drained
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ergo_py import gen
from ergo_py.gen import PID, Alias, Atom, ProcessID, Ref
from ergo_py.net import frames as fr
from ergo_py.net.frames import FrameDecoder, FrameEncoder
from ergo_py.net.handshake import (
    NEED_DATA,
    REASON_UNKNOWN_CONNECTION,
    VERSION,
    AcceptorHandshake,
    DialerHandshake,
    HandshakeComplete,
    JoinHandshake,
    JoinRequested,
    PeerIntroduced,
    Refused,
    Rejected,
)

encode_frame = FrameEncoder().encode_frame
ALLOWED = (gen.ProtocolError, gen.ErrTooLarge)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

COOKIE = "cookie"
SERVER_FP = hashlib.sha256(b"server").digest()
CLIENT_FP = hashlib.sha256(b"client").digest()

# --- strategies ------------------------------------------------------------------

node_names = st.sampled_from(["a@localhost", "b@localhost", "node@host.example"])
pids = st.builds(PID, node_names, st.integers(0, 2**63 - 1), st.integers(0, 2**31))
refs = st.builds(Ref, node_names, st.integers(0, 2**96 - 1), st.integers(0, 2**31))
aliases = st.builds(Alias, node_names, st.integers(0, 2**96 - 1), st.integers(0, 2**31))
names = st.builds(ProcessID, st.text(max_size=10), node_names)
targets = st.one_of(pids, names, aliases)
terms = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.builds(Atom, st.text(max_size=10)),
        pids,
        refs,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=12,
)
any_frame: st.SearchStrategy[fr.Frame] = st.one_of(
    st.builds(fr.SendPID, pids, pids, terms),
    st.builds(fr.SendName, pids, names, terms),
    st.builds(fr.SendAlias, pids, aliases, terms),
    st.builds(fr.CallPID, pids, pids, refs, terms),
    st.builds(fr.CallName, pids, names, refs, terms),
    st.builds(fr.CallAlias, pids, aliases, refs, terms),
    st.builds(fr.CallResponse, pids, pids, refs, terms),
    st.builds(fr.CallError, pids, pids, refs, st.text(max_size=10)),
    st.builds(fr.Exit, pids, pids, terms),
    st.builds(fr.Link, pids, targets),
    st.builds(fr.Unlink, pids, targets),
    st.builds(fr.Monitor, pids, targets, refs),
    st.builds(fr.Demonitor, pids, targets, refs),
    st.builds(fr.DownFrame, pids, targets, refs, terms),
    st.builds(
        fr.SpawnRequest,
        pids,
        refs,
        st.text(max_size=10),
        st.text(max_size=10),
        st.lists(terms, max_size=3).map(tuple),
        st.booleans(),
        st.dictionaries(st.text(max_size=5), terms, max_size=2),
    ),
    st.builds(fr.SpawnResult, pids, refs, st.one_of(st.none(), pids), terms),
    st.just(fr.Keepalive()),
    st.builds(fr.Close, st.booleans()),
)
frame_types = st.sampled_from(
    [
        fr.TYPE_SEND_PID,
        fr.TYPE_SEND_NAME,
        fr.TYPE_SEND_ALIAS,
        fr.TYPE_CALL_PID,
        fr.TYPE_CALL_RESPONSE,
        fr.TYPE_LINK,
        fr.TYPE_MONITOR,
        fr.TYPE_DOWN,
        fr.TYPE_SPAWN_REQUEST,
        fr.TYPE_SPAWN_RESULT,
        fr.TYPE_KEEPALIVE,
        fr.TYPE_CLOSE,
    ]
)
raw_msgpack = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=40),
        st.binary(max_size=40),
    ),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=10,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def drain_decoder(dec: FrameDecoder, chunks: list[bytes]) -> list[fr.Frame]:
    """As a link reads: ``drain`` after each chunk (keepalives dropped, stop at a Close)."""
    out: list[fr.Frame] = []
    for chunk in chunks:
        dec.receive_data(chunk)
        dec.drain(out)
        if out and type(out[-1]) is fr.Close:
            break
    return out


def norm(value: object) -> object:
    """Exceptions compared by (class, text); dataclass frames field by field."""
    if isinstance(value, BaseException):
        return (type(value), str(value))
    if isinstance(value, list | tuple):
        return (type(value), [norm(v) for v in value])
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), *(norm(getattr(value, f.name)) for f in dataclasses.fields(value)))
    return value


# --- frame decoder -----------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 200))
def test_random_bytes_into_the_frame_decoder_raise_only_protocol_errors(
    data: bytes, limit: int
) -> None:
    with contextlib.suppress(*ALLOWED):
        drain_decoder(FrameDecoder(max_size=limit), [data])


@FUZZ
@given(frame_types, st.integers(0, 255), raw_msgpack, st.binary(max_size=8))
def test_valid_headers_with_random_bodies_raise_only_protocol_errors(
    type_: int, order: int, body_term: Any, junk: bytes
) -> None:
    body = msgpack.packb(body_term) + junk
    data = struct.pack(">BBIBB", 78, fr.VERSION, 8 + len(body), order, type_) + body
    with contextlib.suppress(*ALLOWED):
        drain_decoder(FrameDecoder(), [data])


@FUZZ
@given(
    st.sampled_from([fr.TYPE_SEND_PID, fr.TYPE_SEND_NAME, fr.TYPE_SEND_ALIAS]),
    raw_msgpack,
    st.binary(max_size=4),
    st.sampled_from([True, False, None, 1]),
    raw_msgpack,
)
def test_send_frames_with_random_identifier_pairs_raise_only_protocol_errors(
    type_: int, pair_term: Any, junk: bytes, is_tuple: Any, message: Any
) -> None:
    pair = msgpack.packb(pair_term) + junk
    body = msgpack.packb([pair, is_tuple, message])
    data = struct.pack(">BBIBB", 78, fr.VERSION, 8 + len(body), 1, type_) + body
    with contextlib.suppress(*ALLOWED):
        drain_decoder(FrameDecoder(), [data])


@FUZZ
@given(st.lists(any_frame, min_size=1, max_size=6), st.lists(st.integers(0, 10_000), max_size=8))
def test_valid_frame_streams_round_trip_whatever_the_split(
    frames: list[fr.Frame], cuts: list[int]
) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    drained = drain_decoder(FrameDecoder(), split(data, cuts))
    assert norm(drained) == norm(as_drained(frames))


@FUZZ
@given(
    st.lists(any_frame, min_size=1, max_size=4),
    st.integers(0, 10_000),
    st.integers(0, 255),
)
def test_a_corrupted_frame_stream_raises_only_protocol_errors(
    frames: list[fr.Frame], where: int, xor: int
) -> None:
    data = bytearray(b"".join(encode_frame(f) for f in frames))
    data[where % len(data)] ^= xor or 1
    with contextlib.suppress(*ALLOWED):
        drain_decoder(FrameDecoder(), [bytes(data)])


# --- handshake machines ---------------------------------------------------------------


def dialer() -> DialerHandshake:
    return DialerHandshake(
        node_name="a@localhost",
        creation=1,
        peer_name="b@localhost",
        cookie=COOKIE,
        local_cert_fp=CLIENT_FP,
        peer_cert_fp=SERVER_FP,
    )


def acceptor() -> AcceptorHandshake:
    return AcceptorHandshake(
        node_name="b@localhost",
        creation=2,
        cookie=COOKIE,
        local_cert_fp=SERVER_FP,
        peer_cert_fp=CLIENT_FP,
        max_handshake_size=1024,
    )


def answer(m: DialerHandshake | AcceptorHandshake | JoinHandshake, event: Any) -> bool:
    """Answer a machine's question as its owner would here; False if ``event`` is none.

    Every new peer is let in; a Join only from a@localhost (the connection
    the acceptor knows).
    """
    if isinstance(event, PeerIntroduced):
        m.admit()
    elif isinstance(event, JoinRequested):
        if event.peer_name == "a@localhost":
            m.admit()
        else:
            m.refuse(REASON_UNKNOWN_CONNECTION)
    else:
        return False
    return True


def joiner() -> JoinHandshake:
    return JoinHandshake(
        node_name="a@localhost",
        peer_name="b@localhost",
        connection_id="cid",
        cookie=COOKIE,
        local_cert_fp=CLIENT_FP,
        peer_cert_fp=SERVER_FP,
    )


def feed_machine(m: DialerHandshake | AcceptorHandshake | JoinHandshake, data: bytes) -> list[Any]:
    m.receive_data(data)
    events = []
    for _ in range(20):
        ev = m.next_event()
        if ev is NEED_DATA:
            break
        if not answer(m, ev):
            events.append(ev)
    m.data_to_send()
    return events


def handshake_message(term: Any) -> bytes:
    body: bytes = msgpack.packb(term)
    return struct.pack(">BBI", 87, VERSION, len(body)) + body


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_into_the_handshake_machines_raise_only_protocol_errors(
    data: bytes,
) -> None:
    for make in (dialer, joiner):
        m = make()
        m.initiate()
        with contextlib.suppress(*ALLOWED):
            feed_machine(m, data)
    with contextlib.suppress(*ALLOWED):
        feed_machine(acceptor(), data)


@FUZZ
@given(st.integers(1, 5), st.lists(raw_msgpack, max_size=6))
def test_random_handshake_messages_raise_only_protocol_errors(
    msg_type: int, fields: list[Any]
) -> None:
    data = handshake_message([msg_type, *fields])
    for make in (dialer, joiner):
        m = make()
        m.initiate()
        try:
            events = feed_machine(m, data)
        except ALLOWED:
            continue
        assert all(isinstance(e, Refused | Rejected) for e in events)
    try:
        events = feed_machine(acceptor(), data)
    except ALLOWED:
        return
    assert all(isinstance(e, Refused | Rejected) for e in events)


def exchange(
    cuts: list[int], flip: tuple[int, int, int] | None = None
) -> tuple[list[Any], list[Any]]:
    """A full handshake with every flight split at ``cuts``; ``flip``
    = (flight index 0..2, byte index, xor) corrupts one flight in transit."""
    d, a = dialer(), acceptor()
    a_events: list[Any] = []
    d_events: list[Any] = []
    to_a = d.initiate()
    sent = 0
    for _ in range(6):
        if flip is not None and flip[0] == sent and to_a:
            buf = bytearray(to_a)
            buf[flip[1] % len(buf)] ^= flip[2] or 1
            to_a = bytes(buf)
        sent += 1
        for chunk in split(to_a, cuts):
            a_events += feed_machine_keep(a, chunk)
        to_d = a.data_to_send()
        if flip is not None and flip[0] == sent and to_d:
            buf = bytearray(to_d)
            buf[flip[1] % len(buf)] ^= flip[2] or 1
            to_d = bytes(buf)
        sent += 1
        for chunk in split(to_d, cuts):
            d_events += feed_machine_keep(d, chunk)
        to_a = d.data_to_send()
        if not to_a and not to_d:
            break
    return d_events, a_events


def feed_machine_keep(m: DialerHandshake | AcceptorHandshake, data: bytes) -> list[Any]:
    m.receive_data(data)
    events = []
    for _ in range(20):
        ev = m.next_event()
        if ev is NEED_DATA:
            break
        if not answer(m, ev):
            events.append(ev)
    return events


@FUZZ
@given(st.lists(st.integers(0, 10_000), max_size=6))
def test_a_valid_handshake_completes_whatever_the_split(cuts: list[int]) -> None:
    d_events, a_events = exchange(cuts)
    assert len(d_events) == 1 and isinstance(d_events[0], HandshakeComplete)
    assert len(a_events) == 1 and isinstance(a_events[0], HandshakeComplete)
    assert d_events[0].connection_id == a_events[0].connection_id


@FUZZ
@given(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255))
def test_a_corrupted_handshake_never_completes_on_both_sides(
    which: int, where: int, xor: int
) -> None:
    try:
        d_events, a_events = exchange([], flip=(which, where, xor))
    except ALLOWED:
        return
    completed = [e for e in d_events + a_events if isinstance(e, HandshakeComplete)]
    # Every byte of every message is checked (framing, shape or digest).
    assert len(completed) < 2
