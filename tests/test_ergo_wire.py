"""Ergo's handshake (EHS) and packets (ENP) as sans-IO machines: no sockets, no loop."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ergo_py import gen
from ergo_py.gen.errors import HandshakeRejected, RemoteProtocolError
from ergo_py.net.ergo import edf, enp
from ergo_py.net.ergo.handshake import (
    AcceptorMachine,
    DialerMachine,
    Established,
    Joined,
    JoinMachine,
    Local,
)

FP = hashlib.sha1(b"the acceptor's leaf").digest()


def acceptor(cookie: str = "c", fp: bytes | None = FP, **kw: Any) -> AcceptorMachine:
    options: dict[str, Any] = {
        "pool_size": 3,
        "pool_dsn": ("h:1",),
        "local_cert_sha1": fp,
        "admit": lambda peer, creation: None,
    }
    options.update(kw)
    return AcceptorMachine(Local("go@h", 11, cookie), **options)


def dialer(cookie: str = "c", fp: bytes | None = FP, peer: str = "go@h") -> DialerMachine:
    return DialerMachine(Local("py@h", 22, cookie, 1 << 20), peer_name=peer, peer_cert_sha1=fp)


def run(
    d: DialerMachine | JoinMachine, a: AcceptorMachine, chunk: int = 1 << 20
) -> tuple[Any, Any]:
    """Shuttle bytes between the two machines (in ``chunk``-sized pieces) until both are done."""
    to_a = d.initiate()
    for _ in range(10):
        to_d = b""
        for i in range(0, len(to_a), chunk):
            a.receive_data(to_a[i : i + chunk])
            to_d += a.data_to_send()
        to_a = b""
        for i in range(0, len(to_d), chunk):
            d.receive_data(to_d[i : i + chunk])
            to_a += d.data_to_send()
        if d.result is not None and a.result is not None and not to_a:
            return d.result, a.result
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_dialer_and_acceptor_agree(chunk: int) -> None:
    mine, theirs = run(dialer(), acceptor(), chunk)
    assert isinstance(mine, Established) and isinstance(theirs, Established)
    assert (mine.peer, mine.creation, theirs.peer, theirs.creation) == ("go@h", 11, "py@h", 22)
    assert mine.connection_id == theirs.connection_id and len(mine.connection_id) == 32
    assert mine.pool_size == 3 and mine.pool_dsn == ("h:1",)
    # Each side learns the errors the other sends by number.
    assert mine.caches.errors[edf.ERROR_IDS["normal"]] == "normal"


def test_a_wrong_cookie_is_refused_by_the_acceptor() -> None:
    d, a = dialer(cookie="mine"), acceptor(cookie="theirs")
    with pytest.raises(HandshakeRejected, match="cookies differ"):
        a.receive_data(d.initiate())


def test_a_wrong_cookie_is_refused_by_the_dialer() -> None:
    # An acceptor that answers Hello without knowing the cookie (a fake Ergo node).
    d, a = dialer(cookie="mine"), acceptor(cookie="mine")
    a.receive_data(d.initiate())
    reply = bytearray(a.data_to_send())
    reply[-20] ^= 1  # a digest character changed: hex stays hex
    with pytest.raises(HandshakeRejected, match="digest"):
        d.receive_data(bytes(reply))


def test_the_dialer_checks_the_certificate_the_acceptor_served() -> None:
    d, a = dialer(fp=hashlib.sha1(b"another leaf").digest()), acceptor()
    a.receive_data(d.initiate())
    with pytest.raises(HandshakeRejected, match="certificate digest"):
        d.receive_data(a.data_to_send())


def test_a_peer_with_another_name_than_dialled_is_refused() -> None:
    with pytest.raises(HandshakeRejected, match="introduced itself as go@h"):
        run(dialer(peer="other@h"), acceptor())


def test_admission_may_refuse_the_peer() -> None:
    a = acceptor(admit=lambda peer, creation: f"{peer} is not welcome")
    with pytest.raises(HandshakeRejected, match="py@h is not welcome"):
        run(dialer(), a)


def test_a_pool_link_joins_with_the_connection_id() -> None:
    seen: list[tuple[str, str]] = []
    a = acceptor(join=lambda peer, cid: seen.append((peer, cid)))
    j = JoinMachine(Local("py@h", 22, "c"), Joined("go@h", "abc"), peer_cert_sha1=FP)
    mine, theirs = run(j, a)
    assert (mine, theirs) == (Joined("go@h", "abc"), Joined("py@h", "abc"))
    assert seen == [("py@h", "abc")]
    with pytest.raises(HandshakeRejected, match="no pool links"):
        acceptor().receive_data(JoinMachine(Local("x@h", 1, "c"), Joined("go@h", "a")).initiate())


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_hostile_handshake_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError, HandshakeRejected):
        acceptor().receive_data(data)


# --- ENP ------------------------------------------------------------------------------


def codecs() -> tuple[enp.Codec, enp.Codec]:
    """Both ends of one connection: ours (py) and the Go node's (go), as each decodes."""
    ours = edf.Caches(errors={i: t for t, i in edf.ERROR_IDS.items()})
    py = enp.Codec("py@h", 22, "go@h", 11, ours)
    go = enp.Codec("go@h", 11, "py@h", 22, ours)
    return py, go


PY_PID = gen.PID("py@h", 1000, 22)
GO_PID = gen.PID("go@h", 7, 11)


def one(packet: bytes) -> bytes:
    (p,) = enp.PacketReader(0).feed(packet)
    return p


def test_sends_and_calls_decode_on_the_other_side() -> None:
    py, go = codecs()
    event = go.decode(one(py.send(PY_PID, GO_PID, {"k": [1, 2]})))
    assert event == enp.Send(PY_PID, GO_PID, {"k": [1, 2]})
    name = gen.ProcessID("echo", "go@h")
    assert go.decode(one(py.send(PY_PID, name, "x"))) == enp.Send(PY_PID, name, "x")
    alias = gen.Alias("go@h", 123 << 70, 11)
    assert go.decode(one(py.send(PY_PID, alias, 1))) == enp.Send(PY_PID, alias, 1)
    ref = gen.Ref("py@h", 99, 22)
    request = go.decode(one(py.request(PY_PID, name, ref, "q")))
    assert request == enp.Request(PY_PID, name, ref, "q")
    # The Go side answers with the ref it got; we see our own ref again.
    answer = py.decode(one(go.response(GO_PID, PY_PID, request.ref, "a", None)))
    assert answer == enp.Response(GO_PID, PY_PID, gen.Ref("py@h", 99, 22), "a", None)
    failed = py.decode(one(go.response(GO_PID, PY_PID, ref, None, gen.ErrProcessUnknown("x"))))
    assert isinstance(failed, enp.Response) and isinstance(failed.error, gen.ErrProcessUnknown)
    other = py.decode(one(go.response(GO_PID, PY_PID, ref, None, RuntimeError("bad"))))
    assert isinstance(other, enp.Response) and str(other.error) == "bad"


def test_exits_terminations_and_link_requests() -> None:
    py, go = codecs()
    exit_ = go.decode(one(py.exit(PY_PID, GO_PID, gen.Atom("kill"))))
    assert exit_ == enp.ExitSignal(PY_PID, GO_PID, gen.Atom("kill"))
    gone = go.decode(one(py.terminated(PY_PID, gen.Atom("normal"), 1)))
    assert gone == enp.Terminated(PY_PID, gen.Atom("normal"))
    named = gen.ProcessID("svc", "py@h")
    assert go.decode(one(py.terminated(named, RuntimeError("x"), 1))).target == named
    ref = gen.Ref("py@h", 5, 22)
    request = enp.LinkRequest("Monitor", PY_PID, gen.ProcessID("echo", "go@h"), ref)
    assert go.decode(one(py.control(request, 3))) == enp.Control(request)
    result = enp.Result(gen.ErrProcessUnknown("x"), None, ref)
    back = py.decode(one(go.control(result, 3)))
    assert isinstance(back, enp.Control) and isinstance(back.message.error, gen.ErrProcessUnknown)


def test_every_packet_carries_a_nonzero_order_of_its_sender() -> None:
    py, _ = codecs()
    for ident in (0, 255, 510, 7):
        packet = py.send(gen.PID("py@h", ident, 22), GO_PID, 1)
        assert packet[6] == enp.order_of(ident) != 0
    assert enp.order_of(7) == 7


def test_compressed_packets_are_unpacked() -> None:
    py, go = codecs()
    inner = py.send(PY_PID, GO_PID, "x" * 1000)
    for kind, squash in ((102, gzip.compress), (101, __import__("zlib").compress)):
        body = struct.pack(">I", len(inner)) + squash(inner)
        packet = struct.pack(">BBIBBB", 78, 1, 9 + len(body), inner[6], 200, kind) + body
        assert go.decode(one(packet)) == enp.Send(PY_PID, GO_PID, "x" * 1000)
    lzw = struct.pack(">BBIBBB", 78, 1, 13, 1, 200, 100) + bytes(4)
    with pytest.raises(RemoteProtocolError, match="lzw"):
        go.decode(one(lzw))


def test_a_compressed_packet_unpacks_no_further_than_the_limit() -> None:
    py, _ = codecs()
    inner = py.send(PY_PID, GO_PID, b"x" * 100_000)
    body = struct.pack(">I", len(inner)) + gzip.compress(inner)
    packet = struct.pack(">BBIBBB", 78, 1, 9 + len(body), inner[6], 200, 102) + body
    assert len(packet) < 1000
    small = enp.Codec("go@h", 11, "py@h", 22, edf.Caches(), max_size=10_000)
    with pytest.raises(gen.ErrTooLarge, match="beyond 10000"):
        small.decode(one(packet))
    roomy = enp.Codec("go@h", 11, "py@h", 22, edf.Caches(), max_size=len(inner))
    assert roomy.decode(one(packet)) == enp.Send(PY_PID, GO_PID, b"x" * 100_000)
    cut = body[:-20]
    truncated = struct.pack(">BBIBBB", 78, 1, 9 + len(cut), inner[6], 200, 102) + cut
    with pytest.raises(RemoteProtocolError, match="truncated"):
        roomy.decode(one(truncated))


def test_the_reader_cuts_a_stream_anywhere() -> None:
    py, _ = codecs()
    packets = [py.send(PY_PID, GO_PID, i) for i in range(50)]
    stream = b"".join(packets)
    reader = enp.PacketReader(0)
    got: list[bytes] = []
    for i in range(0, len(stream), 13):
        got += reader.feed(stream[i : i + 13])
    assert got == packets
    with pytest.raises(gen.ErrTooLarge):
        enp.PacketReader(100).feed(py.send(PY_PID, GO_PID, "y" * 200))
    with pytest.raises(RemoteProtocolError, match="not an ENP"):
        enp.PacketReader(0).feed(b"GET / HTTP/1.1\r\n")


@given(st.binary(min_size=8, max_size=200))
@settings(max_examples=300, deadline=None)
def test_hostile_packets_raise_only_protocol_errors(body: bytes) -> None:
    _, go = codecs()
    packet = struct.pack(">BBI", 78, 1, len(body) + 6) + body
    try:
        for p in enp.PacketReader(0).feed(packet):
            go.decode(p)
    except (RemoteProtocolError, gen.ErrTooLarge):
        pass


def test_a_parked_pool_slot_keeps_each_writers_order_across_its_release() -> None:
    """Writers race the release of a parked slot: each one's packets arrive in order, none lost."""
    import threading

    from ergo_py.node.ergo_pool import Parked

    class Link:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.got.append(data)

        write_now = write

    parked, link = Parked(), Link()
    n = 5_000

    def writer(w: int) -> None:
        for i in range(n):
            parked.write(bytes([w]) + i.to_bytes(4, "big"))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    parked.release(lambda _data: link)  # type: ignore[arg-type,return-value]
    for t in threads:
        t.join()
    for w in range(3):
        mine = [int.from_bytes(d[1:], "big") for d in link.got if d[0] == w]
        assert mine == list(range(n))
