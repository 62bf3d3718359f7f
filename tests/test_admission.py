"""Who may connect: the node's one admit(), asked by every handshake, both ways.

The events come from the handshake machines (tests/test_handshake.py drives
them); here the node's answers are checked directly, with a real connection
table and a certificate standing in for what TLS said.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ergo_py import gen
from ergo_py.gen.cert import PeerCertificate
from ergo_py.lib import CertificateAuthority
from ergo_py.net.handshake import (
    HandshakeComplete,
    JoinRequested,
    PeerIntroduced,
)
from ergo_py.node.admission import Admission
from ergo_py.node.connections import Connection, ConnectionTable
from ergo_py.node.context import NodeContext

US = "alpha@localhost"
PEER = "beta@localhost"
SIM = gen.NetworkFlags.ENABLE | gen.NetworkFlags.ENABLE_SIMULTANEOUS_CONNECT


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("admission test CA")


class Node:
    """An Admission over a real (empty) connection table."""

    def __init__(self, name: str = US, **network: Any) -> None:
        self.net = gen.NetworkOptions(flags=SIM, **network)
        # owner and loop thread: unused
        ctx = NodeContext(name, 1, "", self.net, None, None)  # type: ignore[arg-type]
        self.table = ConnectionTable(None, ctx)  # type: ignore[arg-type]
        self.dialing: set[str] = set()
        self.admission = Admission(ctx, self.table, self.dialing.__contains__)

    def connected(self, peer: str, creation: int, cid: str, dialed: bool) -> None:
        done = HandshakeComplete(peer, creation, "", SIM, 0, cid, 1, ())
        self.table.conns[peer] = Connection(peer, done, dialed=dialed)

    def admit(self, event: Any, tls: Any = None, dialer: bool = False) -> str | None:
        return self.admission.admit(event, tls, dialer)


def introduced(
    peer: str = PEER, creation: int = 7, replace: bool = False, flags: gen.NetworkFlags = SIM
) -> PeerIntroduced:
    return PeerIntroduced(peer, creation, "v", flags, 0, replace)


def tls_naming(ca: CertificateAuthority, name: str) -> Any:
    """What TLS says on a link whose peer presented a certificate issued for ``name``."""
    der = ca.issue(name, hosts=("127.0.0.1",)).leaf.public_bytes(Encoding.DER)
    return SimpleNamespace(peer=PeerCertificate.from_der(der))


def test_a_new_peer_is_let_in() -> None:
    assert Node().admit(introduced()) is None


def test_the_smaller_name_refuses_a_dial_while_dialing_that_peer_itself() -> None:
    node = Node(US)
    node.dialing.add(PEER)
    assert node.admit(introduced(PEER)) == "simultaneous"


def test_a_dialer_is_never_refused_as_simultaneous_on_its_own_side() -> None:
    node = Node(US)
    node.dialing.add(PEER)
    assert node.admit(introduced(PEER), dialer=True) is None


def test_the_tie_break_comes_before_the_connection_table() -> None:
    node = Node(US)
    node.dialing.add(PEER)
    node.connected(PEER, 7, "c1", dialed=True)
    assert node.admit(introduced(PEER)) == "simultaneous"


def test_a_dial_to_an_incarnation_we_are_connected_to_by_our_own_dial_is_name_taken() -> None:
    node = Node()
    node.connected(PEER, 7, "c1", dialed=True)
    assert node.admit(introduced(creation=7)) == "name taken"


def test_a_peer_dialing_again_replaces_the_connection_it_had_dialed() -> None:
    node = Node()
    node.connected(PEER, 7, "c1", dialed=False)
    assert node.admit(introduced(creation=7)) is None


def test_a_restarted_peer_is_let_in() -> None:
    node = Node()
    node.connected(PEER, 7, "c1", dialed=True)
    assert node.admit(introduced(creation=8)) is None


def test_a_hand_over_is_let_in_both_ways() -> None:
    node = Node()
    node.connected(PEER, 7, "c1", dialed=True)
    assert node.admit(introduced(creation=7, replace=True)) is None
    assert node.admit(introduced(creation=7, replace=True), dialer=True) is None


def test_our_dial_that_lost_to_the_peers_is_name_taken() -> None:
    # The peer's dial came up while ours was in its handshake: use that one.
    node = Node()
    node.connected(PEER, 7, "c1", dialed=False)
    assert node.admit(introduced(creation=7), dialer=True) == "name taken"


def test_a_join_must_name_a_connection_to_that_peer() -> None:
    node = Node()
    node.connected(PEER, 7, "c1", dialed=False)
    assert node.admit(JoinRequested(PEER, "c1")) is None
    assert node.admit(JoinRequested(PEER, "c2")) == "unknown connection"
    assert node.admit(JoinRequested("mallory@localhost", "c1")) == "unknown connection"


def test_a_certificate_naming_another_node_is_refused(ca: CertificateAuthority) -> None:
    reason = Node().admit(introduced(PEER), tls_naming(ca, "mallory@localhost"))
    assert reason is not None
    assert reason.startswith("identity: ") and "mallory@localhost" in reason


def test_a_certificate_naming_the_peer_is_let_in(ca: CertificateAuthority) -> None:
    assert Node().admit(introduced(PEER), tls_naming(ca, PEER)) is None


def test_a_pool_link_is_identity_checked_too(ca: CertificateAuthority) -> None:
    node = Node()
    node.connected(PEER, 7, "c1", dialed=True)
    tls = tls_naming(ca, "mallory@localhost")
    reason = node.admit(JoinRequested(PEER, "c1"), tls, dialer=True)
    assert reason is not None and reason.startswith("identity: ")


def test_a_dialer_skipping_verification_does_not_check_identity(ca: CertificateAuthority) -> None:
    node = Node(insecure_skip_verify=True)
    tls = tls_naming(ca, "mallory@localhost")
    assert node.admit(introduced(PEER), tls, dialer=True) is None
    assert node.admit(introduced(PEER), tls, dialer=False) is not None


def test_the_connection_table_comes_before_identity(ca: CertificateAuthority) -> None:
    node = Node()
    node.connected(PEER, 7, "c1", dialed=True)
    tls = tls_naming(ca, "mallory@localhost")
    assert node.admit(introduced(creation=7), tls) == "name taken"
