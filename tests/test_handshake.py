"""The sans-IO handshake: two machines talking by passing bytes, no sockets.

Each machine stops on PeerIntroduced / JoinRequested until its owner
answers; :func:`drain` answers with a verdict function (by default: let
every peer in), standing in for the node, or with the node's own
``Admission`` where the node's rule is what a test is about.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from ergo_py import gen
from ergo_py.net import handshake as hs
from ergo_py.net.handshake import (
    NEED_DATA,
    AcceptorHandshake,
    DialerHandshake,
    HandshakeComplete,
    HandshakeState,
    JoinComplete,
    JoinHandshake,
    JoinRequested,
    PeerIntroduced,
    Refused,
    Rejected,
)
from ergo_py.node.admission import Admission
from ergo_py.node.connections import Connection, ConnectionTable
from ergo_py.node.context import NodeContext

COOKIE = "secret-cookie"
SERVER_FP = hashlib.sha256(b"server leaf DER").digest()
CLIENT_FP = hashlib.sha256(b"client leaf DER").digest()
MITM_FP = hashlib.sha256(b"mitm leaf DER").digest()
NO_SIM = gen.NetworkFlags.ENABLE


Machine = DialerHandshake | AcceptorHandshake | JoinHandshake
Verdict = Callable[[PeerIntroduced | JoinRequested], str | None]


def admit_all(event: PeerIntroduced | JoinRequested) -> str | None:
    """An owner that lets every peer in."""
    return None


def node_admission(
    name: str, dialing: tuple[str, ...] = (), connections: dict[str, str] | None = None
) -> Verdict:
    """The node's own verdict (``node/admission.py``) on the accepting side, no TLS.

    ``dialing``: peers we are dialing; ``connections``: id -> peer of the
    connections up (other fields made up).
    """
    net = gen.NetworkOptions()
    ctx = NodeContext(name, 1, "", net, None, None)  # type: ignore[arg-type]  # loop: unused
    table = ConnectionTable(None, ctx)  # type: ignore[arg-type]  # owner: unused
    for cid, peer in (connections or {}).items():
        done = HandshakeComplete(peer, 1, "", gen.NetworkFlags.ENABLE, 0, cid, 1, ())
        table.conns[peer] = Connection(peer, done)
    admission = Admission(ctx, table, lambda peer: peer in dialing)
    return lambda event: admission.admit(event, None, dialer=False)


def dialer(**kw: Any) -> DialerHandshake:
    args: dict[str, Any] = dict(
        node_name="alpha@localhost",
        creation=111,
        peer_name="beta@localhost",
        cookie=COOKIE,
        local_cert_fp=CLIENT_FP,
        peer_cert_fp=SERVER_FP,
        max_message_size=1 << 20,
    )
    args.update(kw)
    return DialerHandshake(**args)


def acceptor(**kw: Any) -> AcceptorHandshake:
    args: dict[str, Any] = dict(
        node_name="beta@localhost",
        creation=222,
        cookie=COOKIE,
        local_cert_fp=SERVER_FP,
        peer_cert_fp=CLIENT_FP,
        pool_size=3,
        pool_dsn=["127.0.0.1:11144"],
        max_message_size=2 << 20,
    )
    args.update(kw)
    return AcceptorHandshake(**args)


def drain(m: Machine, verdict: Verdict = admit_all) -> list[Any]:
    """The events up to NEED_DATA, but for the questions ``verdict`` answered."""
    events: list[Any] = []
    for _ in range(10):
        ev = m.next_event()
        if ev is NEED_DATA:
            break
        if isinstance(ev, PeerIntroduced | JoinRequested):
            reason = verdict(ev)
            if reason is None:
                m.admit()
            else:
                m.refuse(reason)
            continue
        events.append(ev)
    return events


def run(
    d: DialerHandshake | JoinHandshake,
    a: AcceptorHandshake,
    a_verdict: Verdict = admit_all,
    d_verdict: Verdict = admit_all,
) -> tuple[list[Any], list[Any]]:
    """Pass bytes back and forth until both sides fall silent."""
    d_events: list[Any] = []
    a_events: list[Any] = []
    to_a = d.initiate()
    for _ in range(10):
        a.receive_data(to_a)
        a_events += drain(a, a_verdict)
        to_d = a.data_to_send()
        d.receive_data(to_d)
        d_events += drain(d, d_verdict)
        to_a = d.data_to_send()
        if not to_a and not to_d:
            break
    return d_events, a_events


def test_the_dialer_is_done_after_one_round_trip() -> None:
    """Its first flight introduces it; the acceptor's one answer completes it."""
    d, a = dialer(), acceptor()
    a.receive_data(d.initiate())
    assert drain(a) == [] and a.state is HandshakeState.RUNNING
    d.receive_data(a.data_to_send())
    assert isinstance(drain(d)[0], HandshakeComplete)
    a.receive_data(d.data_to_send())
    assert isinstance(drain(a)[0], HandshakeComplete)


def test_the_acceptor_does_not_complete_on_a_replayed_first_flight() -> None:
    """A recorded first flight, sent again, cannot finish: the Accept needs the new salt."""
    d, a1 = dialer(), acceptor()
    first = d.initiate()
    a1.receive_data(first)
    drain(a1)
    d.receive_data(a1.data_to_send())
    drain(d)
    old_accept = d.data_to_send()
    a2 = acceptor()
    a2.receive_data(first)
    assert drain(a2) == []
    a2.data_to_send()
    a2.receive_data(old_accept)
    refused = drain(a2)
    assert refused and isinstance(refused[0], hs.Refused)
    assert refused[0].reason == hs.REASON_TLS_BINDING
    assert a2.state is HandshakeState.CLOSED


def test_full_handshake_completes_on_both_sides_with_same_connection_id() -> None:
    d, a = dialer(), acceptor()
    d_events, a_events = run(d, a)
    assert len(d_events) == 1 and len(a_events) == 1
    dc, ac = d_events[0], a_events[0]
    assert isinstance(dc, HandshakeComplete) and isinstance(ac, HandshakeComplete)
    assert dc.connection_id == ac.connection_id
    assert (dc.peer_name, dc.peer_creation, dc.peer_max_message_size) == (
        "beta@localhost",
        222,
        2 << 20,
    )
    assert (ac.peer_name, ac.peer_creation, ac.peer_max_message_size) == (
        "alpha@localhost",
        111,
        1 << 20,
    )
    assert dc.pool_size == ac.pool_size == 3
    assert dc.pool_dsn == ("127.0.0.1:11144",)
    assert isinstance(dc.peer_flags, gen.NetworkFlags)
    assert d.state is a.state is HandshakeState.COMPLETE


def test_each_connection_between_the_same_nodes_gets_its_own_id() -> None:
    first, _ = run(dialer(), acceptor())
    second, _ = run(dialer(), acceptor())
    assert isinstance(first[0], HandshakeComplete) and isinstance(second[0], HandshakeComplete)
    assert first[0].connection_id != second[0].connection_id


def test_connection_id_is_the_same_whichever_side_dials() -> None:
    one = hs.connection_id(COOKIE, "a@h", 1, "b@h", 2)
    other = hs.connection_id(COOKIE, "b@h", 2, "a@h", 1)
    assert one == other
    assert hs.connection_id("other cookie", "a@h", 1, "b@h", 2) != one


def test_handshake_completes_when_the_acceptor_saw_no_client_certificate() -> None:
    d, a = dialer(), acceptor(peer_cert_fp=None)
    d_events, a_events = run(d, a)
    assert isinstance(d_events[0], HandshakeComplete)
    assert isinstance(a_events[0], HandshakeComplete)


def test_handshake_completes_fed_one_byte_at_a_time() -> None:
    d, a = dialer(), acceptor()
    to_a = d.initiate()
    d_done = a_done = None
    for _ in range(10):
        for i in range(len(to_a)):
            a.receive_data(to_a[i : i + 1])
            for ev in drain(a):
                a_done = ev
        to_d = a.data_to_send()
        for i in range(len(to_d)):
            d.receive_data(to_d[i : i + 1])
            for ev in drain(d):
                d_done = ev
        to_a = d.data_to_send()
        if not to_a and not to_d:
            break
    assert isinstance(d_done, HandshakeComplete) and isinstance(a_done, HandshakeComplete)


def test_frames_after_the_final_message_are_left_as_trailing_data() -> None:
    d, a = dialer(), acceptor()
    a.receive_data(d.initiate())
    assert drain(a) == []
    d.receive_data(a.data_to_send())
    assert isinstance(drain(d)[0], HandshakeComplete)
    a.receive_data(d.data_to_send() + b"first frames")
    assert isinstance(drain(a)[0], HandshakeComplete)
    assert a.trailing_data == b"first frames"


def test_bad_cookie_is_rejected_with_reason() -> None:
    d, a = dialer(cookie="wrong"), acceptor()
    d_events, a_events = run(d, a)
    assert a_events == [Refused(hs.REASON_BAD_COOKIE)]
    assert d_events == [Rejected("bad cookie")]
    assert a.state is d.state is HandshakeState.CLOSED


def test_relay_with_its_own_server_certificate_fails_the_tls_binding() -> None:
    # The dialer really talks TLS to a relay that shows MITM_FP and relays
    # the handshake to the real acceptor.
    # The acceptor sees it first: the dialer's introduction names MITM_FP.
    d, a = dialer(peer_cert_fp=MITM_FP), acceptor()
    d_events, a_events = run(d, a)
    assert a_events == [Refused(hs.REASON_TLS_BINDING)]
    assert d_events == [Rejected(hs.REASON_TLS_BINDING)]


def test_relay_with_its_own_client_certificate_fails_the_tls_binding() -> None:
    d, a = dialer(), acceptor(peer_cert_fp=MITM_FP)
    d_events, _ = run(d, a)
    assert d_events == [Refused(hs.REASON_TLS_BINDING)]


def test_acceptor_fingerprinting_another_certificate_than_it_presented_fails() -> None:
    # Ergo's rotation race: the acceptor must fingerprint the certificate
    # this connection used, not whatever its manager holds now.
    d, a = dialer(local_cert_fp=None), acceptor(peer_cert_fp=None, local_cert_fp=MITM_FP)
    d_events, a_events = run(d, a)
    assert a_events == [Refused(hs.REASON_TLS_BINDING)]
    assert d_events == [Rejected(hs.REASON_TLS_BINDING)]


def test_peer_introducing_another_name_than_dialed_is_refused() -> None:
    d, a = dialer(peer_name="gamma@localhost"), acceptor()
    d_events, a_events = run(d, a)
    assert d_events == [Refused(hs.REASON_WRONG_NODE)]
    assert a_events == [Rejected(hs.REASON_WRONG_NODE)]


def test_oversize_handshake_message_raises_too_large_before_the_body_arrives() -> None:
    a = acceptor(max_handshake_size=100)
    a.receive_data(struct.pack(">BBI", 87, hs.VERSION, 101))
    with pytest.raises(gen.ErrTooLarge):
        a.next_event()
    assert a.state is HandshakeState.ERROR
    with pytest.raises(gen.ErrTooLarge):
        a.next_event()


def test_default_handshake_limit_is_65535() -> None:
    a = acceptor()
    a.receive_data(struct.pack(">BBI", 87, hs.VERSION, 65536))
    with pytest.raises(gen.ErrTooLarge):
        a.next_event()


def test_malformed_message_raises_remote_protocol_error_and_reject_can_be_sent() -> None:
    a = acceptor()
    body = b"\xc1"  # never valid msgpack
    a.receive_data(struct.pack(">BBI", 87, hs.VERSION, len(body)) + body)
    with pytest.raises(gen.RemoteProtocolError):
        a.next_event()
    out = a.reject()
    d = dialer()
    d.initiate()
    d.receive_data(out)
    assert drain(d) == [Rejected(hs.REASON_PROTOCOL)]


def test_bad_magic_raises_remote_protocol_error() -> None:
    a = acceptor()
    a.receive_data(b"\x4e\x01\x00\x00\x00\x02ab")
    with pytest.raises(gen.RemoteProtocolError):
        a.next_event()


def test_unexpected_message_type_raises_remote_protocol_error() -> None:
    d = dialer()
    d.initiate()
    body = msgpack.packb([hs.MSG_JOIN, "x@h", "id", b"s" * 32, b"d" * 32])
    d.receive_data(struct.pack(">BBI", 87, hs.VERSION, len(body)) + body)
    with pytest.raises(gen.RemoteProtocolError):
        d.next_event()


def test_wrong_field_shapes_raise_remote_protocol_error() -> None:
    a = acceptor()
    body = msgpack.packb([hs.MSG_HELLO, "not bytes", b"d" * 32])
    a.receive_data(struct.pack(">BBI", 87, hs.VERSION, len(body)) + body)
    with pytest.raises(gen.RemoteProtocolError):
        a.next_event()


def test_acceptor_busy_reject_reaches_the_dialer() -> None:
    a = acceptor()
    d = dialer()
    a.receive_data(d.initiate())
    d.receive_data(a.reject(hs.REASON_BUSY))
    assert drain(d) == [Rejected("busy")]


def test_the_acceptors_owner_can_refuse_a_taken_name() -> None:
    seen: list[tuple[str, int, bool]] = []

    def check(event: PeerIntroduced | JoinRequested) -> str | None:
        assert isinstance(event, PeerIntroduced)
        seen.append((event.peer_name, event.peer_creation, event.replace))
        return hs.REASON_NAME_TAKEN

    d_events, a_events = run(dialer(), acceptor(), a_verdict=check)
    assert seen == [("alpha@localhost", 111, False)]
    assert a_events == [Refused("name taken")]
    assert d_events == [Rejected("name taken")]


def test_simultaneous_connect_refused_by_the_smaller_name_with_a_pending_dial() -> None:
    # alpha < beta: alpha accepts beta's dial while dialing beta itself.
    d = dialer(node_name="beta@localhost", peer_name="alpha@localhost")
    a = acceptor(node_name="alpha@localhost")
    node = node_admission("alpha@localhost", dialing=("beta@localhost",))
    d_events, a_events = run(d, a, a_verdict=node)
    assert a_events == [Refused(hs.REASON_SIMULTANEOUS)]
    assert d_events == [Rejected("simultaneous")]


def test_simultaneous_connect_accepted_by_the_larger_name() -> None:
    d = dialer(node_name="alpha@localhost", peer_name="beta@localhost")
    a = acceptor(node_name="beta@localhost")
    node = node_admission("beta@localhost", dialing=("alpha@localhost",))
    d_events, a_events = run(d, a, a_verdict=node)
    assert isinstance(a_events[0], HandshakeComplete)
    assert isinstance(d_events[0], HandshakeComplete)


def test_simultaneous_connect_tie_break_needs_the_flag_on_both_sides() -> None:
    d = dialer(node_name="beta@localhost", peer_name="alpha@localhost", flags=NO_SIM)
    a = acceptor(node_name="alpha@localhost")
    node = node_admission("alpha@localhost", dialing=("beta@localhost",))
    _, a_events = run(d, a, a_verdict=node)
    assert isinstance(a_events[0], HandshakeComplete)


def _established() -> str:
    d_events, _ = run(dialer(), acceptor())
    cid: str = d_events[0].connection_id
    return cid


def _joiner(cid: str, **kw: Any) -> JoinHandshake:
    args: dict[str, Any] = dict(
        node_name="alpha@localhost",
        peer_name="beta@localhost",
        connection_id=cid,
        cookie=COOKIE,
        local_cert_fp=CLIENT_FP,
        peer_cert_fp=SERVER_FP,
    )
    args.update(kw)
    return JoinHandshake(**args)


def test_join_adds_a_link_to_a_known_connection() -> None:
    cid = _established()
    asked: list[PeerIntroduced | JoinRequested] = []

    def lookup(event: PeerIntroduced | JoinRequested) -> str | None:
        asked.append(event)
        return node_admission("beta@localhost", connections={cid: "alpha@localhost"})(event)

    j, a = _joiner(cid), acceptor()
    j_events, a_events = run(j, a, a_verdict=lookup)
    assert j_events == [JoinComplete("beta@localhost", cid)]
    assert a_events == [JoinComplete("alpha@localhost", cid)]
    assert asked == [JoinRequested("alpha@localhost", cid)]


def test_join_with_unknown_connection_id_is_refused() -> None:
    j, a = _joiner("nope"), acceptor()
    j_events, a_events = run(j, a, a_verdict=node_admission("beta@localhost"))
    assert a_events == [Refused(hs.REASON_UNKNOWN_CONNECTION)]
    assert j_events == [Rejected(hs.REASON_UNKNOWN_CONNECTION)]


def test_join_under_another_node_name_is_refused() -> None:
    cid = _established()
    j = _joiner(cid, node_name="mallory@localhost")
    node = node_admission("beta@localhost", connections={cid: "alpha@localhost"})
    _, a_events = run(j, acceptor(), a_verdict=node)
    assert a_events == [Refused(hs.REASON_UNKNOWN_CONNECTION)]


def test_join_with_bad_cookie_is_refused() -> None:
    cid = _established()
    j = _joiner(cid, cookie="wrong")
    j_events, a_events = run(j, acceptor())
    assert a_events == [Refused(hs.REASON_BAD_COOKIE)]
    assert j_events == [Rejected(hs.REASON_BAD_COOKIE)]


def test_join_through_a_relay_fails() -> None:
    cid = _established()
    j = _joiner(cid, peer_cert_fp=MITM_FP)
    _, a_events = run(j, acceptor())
    assert len(a_events) == 1 and isinstance(a_events[0], Refused)


def test_join_relay_with_its_own_client_certificate_fails() -> None:
    cid = _established()
    j = _joiner(cid)
    j_events, _ = run(j, acceptor(peer_cert_fp=MITM_FP))
    assert j_events == [Refused(hs.REASON_TLS_BINDING)]


def test_rejecting_a_completed_handshake_is_a_local_protocol_error() -> None:
    d, a = dialer(), acceptor()
    run(d, a)
    with pytest.raises(gen.LocalProtocolError):
        d.reject()


def test_next_event_before_initiate_is_a_local_protocol_error() -> None:
    with pytest.raises(gen.LocalProtocolError):
        dialer().next_event()


def test_bad_fingerprint_argument_is_refused() -> None:
    with pytest.raises(gen.ErrIncorrect):
        dialer(local_cert_fp=b"short")


@pytest.mark.parametrize(
    "setting",
    [
        {"creation": -1},
        {"creation": 1 << 63},
        {"flags": 1 << 32},
        {"max_message_size": -5},
        {"creation": True},
        {"max_handshake_size": 0},
    ],
    ids=["negative-creation", "huge-creation", "wide-flags", "negative-max", "bool", "zero-limit"],
)
def test_local_settings_that_cannot_cross_the_wire_are_refused(setting: dict[str, Any]) -> None:
    with pytest.raises(gen.ErrIncorrect):
        dialer(**setting)
    with pytest.raises(gen.ErrIncorrect):
        acceptor(**setting)


def test_bytes_after_a_refusal_are_dropped() -> None:
    d, a = dialer(cookie="wrong"), acceptor()
    run(d, a)
    assert a.state is HandshakeState.CLOSED
    a.receive_data(b"x" * 100_000)
    assert a.trailing_data == b""
    assert a.next_event() is NEED_DATA


def test_connection_id_depends_on_the_cookie_and_both_creations() -> None:
    base = hs.connection_id(COOKIE, "a@h", 1, "b@h", 2)
    assert base == hs.connection_id(COOKIE, "b@h", 2, "a@h", 1)
    assert base != hs.connection_id("other", "a@h", 1, "b@h", 2)
    assert base != hs.connection_id(COOKIE, "a@h", 1, "b@h", 3)
    assert base != hs.connection_id(COOKIE, "a@h", 1, "b@h", 2, b"salts")


def test_join_fed_one_byte_at_a_time_completes() -> None:
    d, a = dialer(), acceptor()
    d_events, _ = run(d, a)
    cid = d_events[0].connection_id
    j = JoinHandshake(
        node_name="alpha@localhost",
        peer_name="beta@localhost",
        connection_id=cid,
        cookie=COOKIE,
        local_cert_fp=CLIENT_FP,
        peer_cert_fp=SERVER_FP,
    )
    b = acceptor()
    j_events: list[Any] = []
    b_events: list[Any] = []
    to_b = j.initiate()
    for _ in range(4):
        for i in range(len(to_b)):
            b.receive_data(to_b[i : i + 1])
            b_events += drain(b)
        to_j = b.data_to_send()
        for i in range(len(to_j)):
            j.receive_data(to_j[i : i + 1])
            j_events += drain(j)
        to_b = j.data_to_send()
    assert j_events == [JoinComplete("beta@localhost", cid)]
    assert b_events == [JoinComplete("alpha@localhost", cid)]


def test_a_reject_reason_with_control_characters_is_made_printable() -> None:
    d = dialer()
    d.initiate()
    d.receive_data(hs.reject_message("busy\nFAKE LOG LINE\x1b[31m"))
    event = d.next_event()
    assert isinstance(event, Rejected)
    assert event.reason == "busy?FAKE LOG LINE?[31m"


def test_a_peer_introducing_the_acceptors_own_name_is_refused() -> None:
    d = dialer(node_name="beta@localhost")
    d_events, a_events = run(d, acceptor(), a_verdict=lambda event: pytest.fail("asked"))
    assert a_events == [Refused(hs.REASON_NAME_TAKEN)]
    assert d_events == [Rejected(hs.REASON_NAME_TAKEN)]


def test_a_dialer_asking_to_replace_says_so_to_both_sides() -> None:
    seen: list[bool] = []

    def check(event: PeerIntroduced | JoinRequested) -> str | None:
        assert isinstance(event, PeerIntroduced)
        seen.append(event.replace)
        return None

    d_events, a_events = run(dialer(replace=True), acceptor(), a_verdict=check)
    assert seen == [True]
    assert isinstance(d_events[-1], HandshakeComplete) and d_events[-1].replace
    assert isinstance(a_events[-1], HandshakeComplete) and a_events[-1].replace


def test_a_plain_dial_is_not_a_replacement() -> None:
    d_events, a_events = run(dialer(), acceptor())
    assert isinstance(d_events[-1], HandshakeComplete) and not d_events[-1].replace
    assert isinstance(a_events[-1], HandshakeComplete) and not a_events[-1].replace


# --- admission: the machine asks, the owner answers ------------------------------------


def test_the_acceptor_sends_nothing_before_its_owner_admits_the_peer() -> None:
    d, a = dialer(), acceptor()
    a.receive_data(d.initiate())
    event = a.next_event()
    assert isinstance(event, PeerIntroduced)
    assert (event.peer_name, event.peer_creation, event.peer_max_message_size) == (
        "alpha@localhost",
        111,
        1 << 20,
    )
    assert not event.replace
    assert a.data_to_send() == b""
    a.admit()
    assert a.next_event() is NEED_DATA
    assert a.data_to_send() != b""


def test_reading_on_before_answering_is_a_local_protocol_error() -> None:
    d, a = dialer(), acceptor()
    a.receive_data(d.initiate())
    assert isinstance(a.next_event(), PeerIntroduced)
    with pytest.raises(gen.LocalProtocolError):
        a.next_event()
    a.refuse("busy")
    assert a.next_event() == Refused("busy")


def test_a_verdict_nobody_asked_for_is_a_local_protocol_error() -> None:
    with pytest.raises(gen.LocalProtocolError):
        acceptor().admit()
    d = dialer()
    d.initiate()
    with pytest.raises(gen.LocalProtocolError):
        d.refuse("no")


def test_the_dialer_asks_before_its_final_accept() -> None:
    d, a = dialer(replace=True), acceptor()
    a.receive_data(d.initiate())
    drain(a)
    d.receive_data(a.data_to_send())
    event = d.next_event()
    assert isinstance(event, PeerIntroduced)
    assert (event.peer_name, event.peer_creation, event.replace) == ("beta@localhost", 222, True)
    assert d.data_to_send() == b""
    d.admit()
    assert isinstance(d.next_event(), HandshakeComplete)


def test_a_dialers_refusal_reaches_the_acceptor_which_never_completes() -> None:
    reason = "identity: certificate 0123 names x@h, not beta@localhost"
    d_events, a_events = run(dialer(), acceptor(), d_verdict=lambda event: reason)
    assert d_events == [Refused(reason)]
    assert a_events == [Rejected(reason)]


def test_a_joiner_asks_before_its_confirmation_and_may_refuse() -> None:
    cid = _established()
    asked: list[PeerIntroduced | JoinRequested] = []

    def refuse(event: PeerIntroduced | JoinRequested) -> str | None:
        asked.append(event)
        return hs.REASON_UNKNOWN_CONNECTION

    j_events, a_events = run(_joiner(cid), acceptor(), d_verdict=refuse)
    assert asked == [JoinRequested("beta@localhost", cid)]
    assert j_events == [Refused(hs.REASON_UNKNOWN_CONNECTION)]
    assert a_events == [Rejected(hs.REASON_UNKNOWN_CONNECTION)]
