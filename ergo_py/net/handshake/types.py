"""What the handshake machines speak in: constants, limits, events and states.

Kept apart from the machines so that the owner side (``net/link.py``, the
node) and the tests can name events and refusal reasons without pulling in
the wire code. The reason strings travel in ``Reject`` messages: peers and
the node's dialer match on them, so they never change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ergo_py.gen.options import NetworkFlags

MAGIC: Final = 87
VERSION: Final = 2  # 2: the dialer's Introduce rides in its first flight
HEADER_SIZE: Final = 6

MSG_HELLO: Final = 1
MSG_INTRODUCE: Final = 2
MSG_ACCEPT: Final = 3
MSG_JOIN: Final = 4
MSG_REJECT: Final = 5

REASON_BAD_COOKIE: Final = "bad cookie"
REASON_BUSY: Final = "busy"
REASON_SIMULTANEOUS: Final = "simultaneous"
REASON_NAME_TAKEN: Final = "name taken"
REASON_TLS_BINDING: Final = "tls binding mismatch"
REASON_WRONG_NODE: Final = "wrong node"
REASON_UNKNOWN_CONNECTION: Final = "unknown connection"
REASON_PROTOCOL: Final = "protocol error"
REASON_TIMEOUT: Final = "timeout"

SALT_SIZE: Final = 32
FINGERPRINT_SIZE: Final = 32
DIGEST_SIZE: Final = 32
MAX_REASON: Final = 255
MAX_VERSION: Final = 255
MAX_DSN: Final = 16
MAX_POOL_SIZE: Final = 255
U32: Final = 1 << 32
U63: Final = 1 << 63


class NeedData:
    """The type of :data:`NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
"""``next_event()`` needs more bytes (or the handshake is over)."""


@dataclass(frozen=True, slots=True)
class _PeerFacts:
    """Who the peer said it is: what both :class:`PeerIntroduced` and
    :class:`HandshakeComplete` carry."""

    peer_name: str
    peer_creation: int
    peer_version: str
    peer_flags: NetworkFlags
    peer_max_message_size: int


@dataclass(frozen=True, slots=True)
class HandshakeComplete(_PeerFacts):
    """Both sides agreed; the link carries frames from now on.

    ``pool_size``/``pool_dsn`` are what the acceptor offered (a dialer opens
    ``pool_size - 1`` more links with :class:`JoinHandshake`).
    """

    connection_id: str
    pool_size: int
    pool_dsn: tuple[str, ...]
    replace: bool = False


@dataclass(frozen=True, slots=True)
class _JoinFacts:
    """A pool link and the connection it joins."""

    peer_name: str
    connection_id: str


@dataclass(frozen=True, slots=True)
class JoinComplete(_JoinFacts):
    """An extra pool link joined connection ``connection_id`` to ``peer_name``."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The peer refused the handshake with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """We refused the peer with ``reason``; a Reject waits in ``data_to_send()``."""

    reason: str


@dataclass(frozen=True, slots=True)
class PeerIntroduced(_PeerFacts):
    """The peer of a new connection said who it is; the machine waits for a verdict.

    Answer with ``admit()`` (the handshake goes on) or ``refuse(reason)``
    (the reason goes to the peer in a Reject). An acceptor asks once the
    dialer's first flight checked out (cookie, TLS binding, not our own
    name), before it answers; ``replace`` is then the dialer's wish to take
    over from the connection already up. A dialer asks once the acceptor's
    whole answer checked out, before its final Accept; ``replace`` is then
    its own request.
    """

    replace: bool = False


@dataclass(frozen=True, slots=True)
class JoinRequested(_JoinFacts):
    """A link is to join connection ``connection_id`` to ``peer_name``; awaiting a verdict.

    Answer as :class:`PeerIntroduced`. An acceptor asks once the Join's
    digest checked out, a joining dialer once the acceptor's Accept did.
    """


AdmissionEvent = PeerIntroduced | JoinRequested
"""The events a machine pauses on until ``admit()`` or ``refuse(reason)``."""

Event = HandshakeComplete | JoinComplete | Rejected | Refused | PeerIntroduced | JoinRequested


class HandshakeState(enum.Enum):
    """Where a machine is, coarsely."""

    IDLE = "idle"  # a dialer before initiate()
    RUNNING = "running"
    COMPLETE = "complete"
    CLOSED = "closed"  # rejected or refused
    ERROR = "error"  # a protocol error was raised
