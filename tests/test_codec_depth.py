"""Deeply nested terms are refused with typed errors; nothing overflows the C stack.

Each tuple or registered dataclass in a term is one level of recursion in the
codec (an extension value inside an extension value), and each level takes a
sizeable C stack frame: unbounded, a few hundred levels killed the process
with SIGSEGV. What could crash runs in a child interpreter here, so a
regression fails its test instead of the whole run.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import WAIT, Recorder, get, wait_threads_gone
from deepterms import Box, nested_list, nested_tuple, nested_tuple_bytes, send_frame_bytes

from ergo_py import act, gen
from ergo_py.net import codec
from ergo_py.net import frames as fr
from ergo_py.net.handshake import NEED_DATA, DialerHandshake, HandshakeComplete, PeerIntroduced
from ergo_py.testing import Cluster

LIMIT = 64  # the default
COOKIE = "cookie"
TESTS = Path(__file__).parent


def run_isolated(source: str) -> list[str]:
    """Run ``source`` in a fresh interpreter; the words it printed.

    A crash there fails the calling test with the child's exit status
    (-11 is SIGSEGV) and leaves this process alive.
    """
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout.split()


# --- the limit -----------------------------------------------------------------


def test_the_default_limit_is_64() -> None:
    assert codec.DEFAULT_MAX_DEPTH == LIMIT
    assert codec.max_depth() == LIMIT


def test_tuples_nested_to_the_limit_round_trip() -> None:
    value = nested_tuple(LIMIT, "leaf")
    assert codec.copy(value) == value
    assert codec.decode(nested_tuple_bytes(LIMIT)) == nested_tuple(LIMIT)


def test_one_tuple_past_the_limit_is_refused_by_encode() -> None:
    with pytest.raises(gen.ErrTooDeep, match=f"more than {LIMIT}"):
        codec.encode(nested_tuple(LIMIT + 1))


def test_one_tuple_past_the_limit_is_refused_by_decode() -> None:
    with pytest.raises(gen.RemoteProtocolError, match=f"more than {LIMIT}"):
        codec.decode(nested_tuple_bytes(LIMIT + 1))


def test_too_deep_is_an_unsupported_type_error() -> None:
    assert issubclass(gen.ErrTooDeep, gen.ErrUnsupportedType)
    with pytest.raises(gen.ErrUnsupportedType):
        codec.encode(nested_tuple(LIMIT + 1))


def test_registered_dataclasses_count_as_levels() -> None:
    value: Any = None
    for i in range(LIMIT):
        value = Box(value) if i % 2 else (value,)
    assert codec.copy(value) == value
    with pytest.raises(gen.ErrTooDeep):
        codec.encode(Box(value))
    with pytest.raises(gen.ErrTooDeep):
        codec.encode([(value,)])


def test_lists_and_dicts_between_tuples_do_not_count() -> None:
    value: Any = "leaf"
    for _ in range(LIMIT):
        value = ([{"k": value}],)
    assert codec.copy(value) == value


def test_identifiers_atoms_and_errors_are_leaves() -> None:
    pid = gen.PID("a@localhost", 7, 1)
    leaf = [pid, gen.Atom("x"), gen.Ref("a@localhost", 9, 1), gen.ErrTimeout("late")]
    value = nested_tuple(LIMIT, leaf)
    out = codec.copy(value)
    for _ in range(LIMIT):
        out = out[0]
    assert out[:3] == leaf[:3]
    assert type(out[3]) is gen.ErrTimeout and str(out[3]) == "late"


def test_a_tuple_10000_deep_raises_a_typed_error_not_recursion_error() -> None:
    deep = nested_tuple(10_000)
    with pytest.raises(gen.ErrTooDeep):
        codec.encode(deep)
    with pytest.raises(gen.ErrTooDeep):
        codec.copy(deep)


def test_lists_nested_past_msgpacks_own_limit_get_the_same_typed_errors() -> None:
    with pytest.raises(gen.ErrTooDeep, match="lists and dicts"):
        codec.encode(nested_list(2000))
    with pytest.raises(gen.ErrTooDeep, match="lists and dicts"):
        codec.encode(nested_tuple(3, nested_list(2000)))
    with pytest.raises(gen.RemoteProtocolError, match="lists and dicts"):
        codec.decode(b"\x91" * 2000 + b"\xc0")
    with pytest.raises(gen.RemoteProtocolError, match="lists and dicts"):
        codec.decode(nested_tuple_bytes(3, b"\x91" * 2000 + b"\xc0"))


def test_an_extension_value_inside_an_identifier_is_refused() -> None:
    payload = b"\x93" + nested_tuple_bytes(1) + b"\x01\x01"  # [(nil,), 1, 1]
    with pytest.raises(gen.RemoteProtocolError, match="extension type"):
        codec.decode(b"\xc7" + bytes((len(payload), 3)) + payload)


def test_after_a_refusal_the_encoder_packs_as_before() -> None:
    samples: list[Any] = [("pong", 1, [2, (3,)]), {"k": ("v",)}, Box((1, 2)), [1, "x"]]
    before = [codec.encode(v) for v in samples]
    for bad in (nested_tuple(10_000), nested_list(2000), ("ok", nested_tuple(LIMIT + 1))):
        with pytest.raises(gen.ErrTooDeep):
            codec.encode(bad)
        assert [codec.encode(v) for v in samples] == before


def test_threads_encoding_and_decoding_at_once_each_get_their_own_answer() -> None:
    at_limit = nested_tuple(LIMIT, "x")
    over = nested_tuple(LIMIT + 1)
    over_bytes = nested_tuple_bytes(LIMIT + 1)
    failures: list[str] = []

    def work() -> None:
        for _ in range(30):
            if codec.copy(at_limit) != at_limit:
                failures.append("round trip")
            try:
                codec.encode(over)
                failures.append("encode accepted")
            except gen.ErrTooDeep:
                pass
            try:
                codec.decode(over_bytes)
                failures.append("decode accepted")
            except gen.RemoteProtocolError:
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
    assert failures == []


def test_the_limit_can_be_changed_for_the_process() -> None:
    previous = codec.set_max_depth(3)
    try:
        assert previous == LIMIT
        assert codec.copy(nested_tuple(3)) == nested_tuple(3)
        with pytest.raises(gen.ErrTooDeep, match="more than 3"):
            codec.encode(nested_tuple(4))
        with pytest.raises(gen.RemoteProtocolError, match="more than 3"):
            codec.decode(nested_tuple_bytes(4))
    finally:
        codec.set_max_depth(previous)
    assert codec.copy(nested_tuple(LIMIT)) == nested_tuple(LIMIT)


def test_a_limit_out_of_range_is_refused() -> None:
    for bad in (0, -1, codec.MAX_DEPTH_CAP + 1):
        with pytest.raises(gen.ErrIncorrect):
            codec.set_max_depth(bad)
    assert codec.max_depth() == LIMIT


# --- what used to kill the process (checked in a child interpreter) -------------------


def test_decoding_a_1kb_blob_of_300_nested_tuples_is_a_protocol_error() -> None:
    out = run_isolated(
        """
        from deepterms import nested_tuple_bytes
        from ergo_py import gen
        from ergo_py.net import codec

        blob = nested_tuple_bytes(300)
        assert len(blob) < 1500, len(blob)
        try:
            codec.decode(blob)
        except gen.RemoteProtocolError:
            print("RemoteProtocolError")
        """
    )
    assert out == ["RemoteProtocolError"]


def test_copying_a_300_deep_tuple_is_a_typed_error() -> None:
    out = run_isolated(
        """
        from deepterms import nested_tuple
        from ergo_py import gen
        from ergo_py.net import codec

        try:
            codec.copy(nested_tuple(300))
        except gen.ErrTooDeep:
            print("ErrTooDeep")
        """
    )
    assert out == ["ErrTooDeep"]


def test_a_deep_term_inside_an_identifier_is_a_protocol_error() -> None:
    out = run_isolated(
        """
        from deepterms import ext, nested_tuple_bytes
        from ergo_py import gen
        from ergo_py.net import codec

        try:
            codec.decode(ext(3, b"\\x93" + nested_tuple_bytes(300) + b"\\x01\\x01"))
        except gen.RemoteProtocolError:
            print("RemoteProtocolError")
        """
    )
    assert out == ["RemoteProtocolError"]


def test_lists_nested_inside_every_tuple_level_cannot_exhaust_the_stack() -> None:
    # Below the tuple limit, but each level holds nearly msgpack's 1024 levels
    # of lists: packed recursively, 64 x 1000 levels overflowed the C stack.
    out = run_isolated(
        """
        from deepterms import tuples_of_lists_bytes
        from ergo_py import gen
        from ergo_py.net import codec

        value = None
        for _ in range(60):
            value = ([[[[[[[[[[value]]]]]]]]]],)
        print(type(codec.copy(value)).__name__)
        value = None
        for _ in range(60):
            for _ in range(1000):
                value = [value]
            value = (value,)
        try:
            codec.encode(value)
        except gen.ErrTooDeep:
            print("ErrTooDeep")
        received = codec.decode(tuples_of_lists_bytes(60, 1000))  # lists unpack flat
        try:
            codec.copy(received)  # forwarding it must not crash either
        except gen.ErrTooDeep:
            print("ErrTooDeep")
        """
    )
    assert out == ["tuple", "ErrTooDeep", "ErrTooDeep"]


def test_a_frame_with_a_deep_message_breaks_only_the_decoder() -> None:
    out = run_isolated(
        """
        from deepterms import nested_tuple_bytes, send_frame_bytes
        from ergo_py import gen
        from ergo_py.net import frames as fr

        src = gen.PID("a@localhost", 1, 1)
        dst = gen.PID("b@localhost", 2, 1)
        good = fr.FrameEncoder().encode_frame(fr.SendPID(src, dst, "before"))
        bad = send_frame_bytes(src, dst, nested_tuple_bytes(300))
        dec = fr.FrameDecoder()
        dec.receive_data(good + bad + good)
        got = []
        try:
            dec.drain(got)
        except gen.RemoteProtocolError:
            print(len(got), "RemoteProtocolError")
        try:
            dec.drain(got)
        except gen.RemoteProtocolError:
            print("broken")
        """
    )
    assert out == ["1", "RemoteProtocolError", "broken"]


# --- nodes -------------------------------------------------------------------------


class Deep(act.Actor):
    """Answers the call "deep" with a value too deep to send back."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "deep":
            return nested_tuple(10_000)
        return ("ok", request)


def test_a_local_send_or_call_of_a_too_deep_value_fails_at_the_sender(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    deep = nested_tuple(10_000)
    with pytest.raises(gen.ErrTooDeep):
        node.send(pid, deep)
    with pytest.raises(gen.ErrTooDeep):
        node.call(pid, deep)
    assert node.call(pid, "ping") == ("ok", "ping")
    node.send(pid, "after")
    assert get(out) == (node.pid, "after")


def test_a_too_deep_reply_reaches_the_caller_as_a_typed_error(node: gen.Node) -> None:
    pid = node.spawn(Deep)
    with pytest.raises(gen.ErrTooDeep):
        node.call(pid, "deep", timeout=WAIT)
    assert node.call(pid, "ping") == ("ok", "ping")


@pytest.fixture
def nodes() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[], cookie=COOKIE, start=False) as cluster:
        yield cluster
    assert wait_threads_gone(before) == []


class Pong(act.Actor):
    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return ("pong", request)


def test_a_too_deep_remote_send_or_call_fails_at_the_sender(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    out: queue.Queue[Any] = queue.Queue()
    pid = b.spawn(Recorder, out)
    deep = nested_tuple(10_000)
    with pytest.raises(gen.ErrTooDeep):
        a.send(pid, deep)
    with pytest.raises(gen.ErrTooDeep):
        a.call(pid, deep)
    a.send(pid, "after")
    assert get(out) == (a.pid, "after")


def raw_dial(port: int, name: str, peer: str) -> tuple[socket.socket, fr.FrameDecoder]:
    """A plain TCP link to ``peer`` with the handshake done by hand."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    hs = DialerHandshake(node_name=name, creation=1, peer_name=peer, cookie=COOKIE)
    sock.sendall(hs.initiate())
    while True:
        event = hs.next_event()
        if isinstance(event, PeerIntroduced):
            hs.admit()
            continue
        sock.sendall(hs.data_to_send())
        if isinstance(event, HandshakeComplete):
            break
        assert event is NEED_DATA, event
        data = sock.recv(65536)
        assert data, "the acceptor closed the handshake"
        hs.receive_data(data)
    decoder = fr.FrameDecoder()
    decoder.receive_data(hs.trailing_data)
    return sock, decoder


def read_frames(sock: socket.socket, decoder: fr.FrameDecoder, want: type) -> list[Any]:
    """Frames read until one of type ``want`` arrives."""
    frames: list[Any] = []
    deadline = time.monotonic() + WAIT
    while not any(type(f) is want for f in frames):
        assert time.monotonic() < deadline, frames
        decoder.drain(frames)
        if not any(type(f) is want for f in frames):
            data = sock.recv(65536)
            assert data, "link closed"
            decoder.receive_data(data)
    return frames


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closes the connection within WAIT (what it sends is dropped)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_a_peer_sending_a_too_deep_term_loses_its_link_and_the_node_keeps_serving(
    nodes: Cluster,
) -> None:
    # b runs in a child process: before the fix, this frame killed it.
    opts = nodes.node_options("b@127.0.0.1", tls=False)
    b = nodes.start("b@127.0.0.1", opts, process=True)
    b.spawn_register("pong", Pong)
    pong = gen.ProcessID("pong", "b@127.0.0.1")
    me = gen.PID("raw@127.0.0.1", 1000, 1)
    sock, decoder = raw_dial(opts.network.acceptors[0].port, "raw@127.0.0.1", "b@127.0.0.1")
    with sock:
        # The link works: a well-formed call is answered.
        hi = fr.CallName(me, pong, gen.Ref(me.node, 1, 1), "hi")
        sock.sendall(fr.FrameEncoder().encode_frame(hi))
        replies = read_frames(sock, decoder, fr.CallResponse)
        assert [f.result for f in replies if type(f) is fr.CallResponse] == [("pong", "hi")]
        blob = nested_tuple_bytes(300)
        assert len(blob) < 1500
        sock.sendall(send_frame_bytes(me, pong, blob))
        assert closed_by_peer(sock)
    assert b.is_alive()
    a = nodes.start("a@127.0.0.1", tls=False)
    assert a.call(pong, "after") == ("pong", "after")
