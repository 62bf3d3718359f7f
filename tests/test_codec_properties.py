"""Properties of the term codec over generated terms of any depth.

The generator does not keep terms under the nesting limit: extension levels
(tuples, registered dataclasses) go up to twice the limit, with lists and
dicts between them, so every property is checked on both sides of it. The
expected depth comes from an oracle (``deepterms.ext_depth``), and decoding is
fed bytes packed by hand (``deepterms.pack``), not by the codec under test.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from deepterms import Box, ext_depth, nested_tuple_bytes, pack, send_frame_bytes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ergo_py import gen
from ergo_py.net import codec
from ergo_py.net import frames as fr

LIMIT = codec.DEFAULT_MAX_DEPTH
PROPS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ENCODER = fr.FrameEncoder()
SRC = gen.PID("a@localhost", 1, 1)
DST = gen.PID("b@localhost", 2, 1)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.builds(gen.Atom, st.text(min_size=1, max_size=4)),
)
small_terms = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.builds(Box, inner),
    ),
    max_leaves=6,
)


SIBLINGS: list[Any] = [None, True, -1, 2**40, 1.5, "s", b"b", gen.Atom("a")]


@st.composite
def deep_terms(draw: st.DrawFn) -> Any:
    """A small term wrapped in up to 2 x LIMIT extension levels (tuples and
    registered dataclasses) and up to 16 lists or dicts, in random order, some
    levels with a sibling beside the inner value.

    Hypothesis draws the counts and the innermost term (they shrink well); the
    layout comes from a seeded ``random.Random``, far cheaper to draw."""
    exts = draw(st.one_of(st.integers(0, 2 * LIMIT), st.sampled_from([LIMIT, LIMIT + 1])))
    plain = draw(st.integers(0, 16))
    value = draw(small_terms)
    rnd = random.Random(draw(st.integers(0, 2**32)))
    kinds = ["ext"] * exts + ["plain"] * plain
    rnd.shuffle(kinds)
    for kind in kinds:
        sibling = [rnd.choice(SIBLINGS)] if rnd.random() < 0.3 else []
        if kind == "ext":
            value = Box(value) if rnd.random() < 0.3 else (*sibling, value)
        elif rnd.random() < 0.5:
            value = [value, *sibling]
        else:
            value = {"v": value, **dict(zip(["s"], sibling, strict=False))}
    return value


def wire_depth(message: Any) -> int:
    """The depth the frame codec checks: a message tuple travels as its items."""
    if type(message) is tuple:
        return max(map(ext_depth, message), default=0)
    return ext_depth(message)


@PROPS
@given(deep_terms())
def test_a_term_round_trips_or_is_refused_exactly_past_the_limit(term: Any) -> None:
    depth = ext_depth(term)
    event("at the limit" if depth == LIMIT else "within" if depth < LIMIT else "past it")
    if depth <= LIMIT:
        out = codec.copy(term)
        assert out == term
        assert type(out) is type(term)
    else:
        with pytest.raises(gen.ErrTooDeep):
            codec.encode(term)


@PROPS
@given(deep_terms())
def test_hand_packed_bytes_decode_or_are_refused_exactly_past_the_limit(term: Any) -> None:
    data = pack(term)
    if ext_depth(term) <= LIMIT:
        assert codec.decode(data) == term
    else:
        with pytest.raises(gen.RemoteProtocolError):
            codec.decode(data)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@PROPS
@given(
    st.lists(deep_terms(), min_size=1, max_size=4),
    st.lists(st.integers(0, 100_000), max_size=10),
    st.integers(0, LIMIT),
)
def test_frame_streams_with_deep_terms_decode_whatever_the_split(
    messages: list[Any], cuts: list[int], too_deep_by: int
) -> None:
    frames: list[Any] = []
    for i, message in enumerate(messages):
        frame = (
            fr.SendPID(SRC, DST, message) if i % 2 else fr.CallPID(SRC, DST, make_ref(i), message)
        )
        if wire_depth(message) > LIMIT:
            with pytest.raises(gen.ErrTooDeep):
                ENCODER.encode_frame(frame)
        else:
            frames.append(frame)
    data = b"".join(ENCODER.encode_frame(f) for f in frames)
    # A peer's frame one or more levels too deep ends the stream: the frames
    # before it come out, then the decoder is broken.
    bad = send_frame_bytes(SRC, DST, nested_tuple_bytes(LIMIT + 1 + too_deep_by))
    chunks = split(data + bad, cuts)

    dec = fr.FrameDecoder()
    drained: list[Any] = []
    with pytest.raises(gen.RemoteProtocolError, match="nested"):
        for chunk in chunks:
            dec.receive_data(chunk)
            dec.drain(drained)
    assert drained == [tuple(f) if type(f) is fr.SendPID else f for f in frames]
    with pytest.raises(gen.RemoteProtocolError):  # broken for good
        dec.drain([])


def make_ref(i: int) -> gen.Ref:
    return gen.Ref(SRC.node, i + 1, SRC.creation)
