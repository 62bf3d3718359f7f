"""What the three handshake machines share: the buffer, the outbox, the verdict, the end.

A machine is fed bytes (``receive_data``), hands out events (``next_event``)
and bytes to write (``data_to_send``); it never touches a socket or a clock,
and never asks its owner anything: once it knows who the peer is it hands
out a :class:`PeerIntroduced` or :class:`JoinRequested` and stops until the
owner answers with ``admit()`` or ``refuse(reason)``. Subclasses supply
``_handle`` (one message in, maybe an event out) and ``_admitted`` (what
follows a yes); this base does the message splitting, the pause, the
Reject both ways and the terminal states, so that every machine behaves the
same there whichever side it plays. :class:`IntroMachine` adds what the
two sides of a full handshake share: our identity and the peer's Intro.
"""

from __future__ import annotations

import logging
import os
from typing import Any, TypedDict, Unpack

from ergo_py._version import __version__
from ergo_py.gen.errors import (
    ErrIncorrect,
    ErrTooLarge,
    LocalProtocolError,
    RemoteProtocolError,
)
from ergo_py.gen.options import (
    DEFAULT_HANDSHAKE_MAX_MESSAGE_SIZE,
    DEFAULT_NETWORK_FLAGS,
    NetworkFlags,
)
from ergo_py.net.handshake import wire
from ergo_py.net.handshake.types import (
    MAX_REASON,
    MAX_VERSION,
    MSG_REJECT,
    NEED_DATA,
    REASON_PROTOCOL,
    SALT_SIZE,
    U32,
    U63,
    AdmissionEvent,
    Event,
    HandshakeComplete,
    HandshakeState,
    JoinRequested,
    NeedData,
    PeerIntroduced,
    Refused,
    Rejected,
)

_log = logging.getLogger(__name__)


class MachineArgs(TypedDict, total=False):
    """What every handshake machine takes beyond its own identity: the
    certificate fingerprints it binds and its size limit."""

    local_cert_fp: bytes | None
    peer_cert_fp: bytes | None
    max_handshake_size: int


class IntroArgs(MachineArgs, total=False):
    """What a full handshake (dial or accept) adds: its introduction."""

    flags: int
    version: str
    max_message_size: int


class BaseMachine:
    """Buffering, message splitting, the outbox and the terminal states."""

    _expect: int  # the private step we are in; meaning depends on the subclass

    def __init__(
        self,
        *,
        node_name: str,
        cookie: str,
        server: bool,
        local_cert_fp: bytes | None = None,
        peer_cert_fp: bytes | None = None,
        max_handshake_size: int = DEFAULT_HANDSHAKE_MAX_MESSAGE_SIZE,
    ) -> None:
        if type(cookie) is not str:
            raise ErrIncorrect("cookie must be a str")
        if wire.check_uint(max_handshake_size, U32, "max_handshake_size") == 0:
            raise ErrIncorrect("max_handshake_size must be positive")
        self._key = cookie.encode()
        self._cookie = cookie
        local = wire.check_fingerprint(local_cert_fp, "local_cert_fp")
        peer = wire.check_fingerprint(peer_cert_fp, "peer_cert_fp")
        # Our own view of (server fp, client fp) on this connection.
        self._server_fp = local if server else peer
        self._client_fp = peer if server else local
        self._max = max_handshake_size
        self._buf = bytearray()
        self._pos = 0
        self._out = bytearray()
        self._state = HandshakeState.RUNNING
        self._error: Exception | None = None
        self._asking: AdmissionEvent | None = None  # handed out, not answered yet
        self._ready: Event | None = None  # what the verdict led to, for next_event()
        self._s1 = b""
        self._s2 = b""
        self._name = wire.check_name(node_name, "node_name")

    # -- public API --

    @property
    def state(self) -> HandshakeState:
        """Where the handshake is."""
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the connection (any split is fine).

        Once the machine is closed (rejected, refused) or broken, further
        bytes are dropped: a refused peer cannot make us buffer without bound.
        """
        if self._state is HandshakeState.CLOSED or self._state is HandshakeState.ERROR:
            return
        self._buf += data

    def data_to_send(self) -> bytes:
        """Bytes to write now (may be empty); calling it drains the outbox."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the last handshake message (the first frames)."""
        return bytes(self._buf[self._pos :])

    def reject(self, reason: str = REASON_PROTOCOL) -> bytes:
        """End the handshake from our side; returns the framed Reject to send.

        Allowed at any point before completion (after a protocol error, a
        timeout, or when the acceptor is busy). Anything still in the outbox
        is dropped.
        """
        if self._state is HandshakeState.COMPLETE:
            raise LocalProtocolError("cannot reject a completed handshake")
        self._state = HandshakeState.CLOSED
        self._asking = self._ready = None
        self._out.clear()
        return wire.reject_message(reason)

    def admit(self) -> None:
        """Let the peer in: the answer to :class:`PeerIntroduced` or :class:`JoinRequested`.

        The handshake goes on: write out ``data_to_send()`` and call
        ``next_event()`` again (a dialer completes right away).
        """
        event = self._answered()
        self._ready = self._admitted(event)

    def refuse(self, reason: str) -> None:
        """Keep the peer out: the answer to :class:`PeerIntroduced` or :class:`JoinRequested`.

        A ``Reject{reason}`` waits in ``data_to_send()`` and ``next_event()``
        returns ``Refused(reason)``.
        """
        self._answered()
        self._ready = self._refuse(reason)

    def next_event(self) -> Event | NeedData:
        """The next event, or :data:`NEED_DATA`.

        Raises ``gen.RemoteProtocolError`` for anything malformed or out of
        place and ``gen.ErrTooLarge`` for an oversized message; after that the
        machine is broken and raises the same error again. Called again before
        a :class:`PeerIntroduced` or :class:`JoinRequested` was answered, it
        raises ``gen.LocalProtocolError``: the peer's next bytes wait.
        """
        if self._error is not None:
            raise self._error
        if self._state is HandshakeState.IDLE:
            raise LocalProtocolError("call initiate() first")
        if self._asking is not None:
            what = type(self._asking).__name__
            raise LocalProtocolError(f"answer {what} with admit() or refuse() first")
        if self._ready is not None:
            ready, self._ready = self._ready, None
            return ready
        try:
            while self._state is HandshakeState.RUNNING:
                read = wire.read_message(self._buf, self._pos, self._max)
                if read is None:
                    return NEED_DATA
                msg, self._pos = read
                if msg[0] == MSG_REJECT:
                    (reason,) = wire.fields(msg, "Reject", (str,))
                    self._state = HandshakeState.CLOSED
                    return Rejected(wire.printable(reason[:MAX_REASON]))
                event = self._handle(msg)
                if isinstance(event, PeerIntroduced | JoinRequested):
                    self._asking = event
                if event is not None:
                    return event
            return NEED_DATA
        except (RemoteProtocolError, ErrTooLarge) as exc:
            self._state = HandshakeState.ERROR
            self._error = exc
            raise

    # -- for subclasses --

    def _handle(self, msg: list[Any]) -> Event | None:
        raise NotImplementedError

    def _admitted(self, event: AdmissionEvent) -> Event | None:
        """The owner said yes to ``event``: queue the answer; maybe an event to hand out."""
        raise NotImplementedError

    def _answered(self) -> AdmissionEvent:
        event = self._asking
        if event is None or self._state is not HandshakeState.RUNNING:
            raise LocalProtocolError("no PeerIntroduced or JoinRequested is waiting for a verdict")
        self._asking = None
        return event

    def _begin(self) -> None:
        """A dialing side's ``initiate()``: once only, from IDLE, with a fresh salt."""
        if self._state is not HandshakeState.IDLE:
            raise LocalProtocolError("initiate() may be called only once")
        self._state = HandshakeState.RUNNING
        self._s1 = os.urandom(SALT_SIZE)

    def _take_client_fp(self, client_fp: bytes) -> bool:
        """The client certificate the acceptor says it saw: none, or ours (True)."""
        if client_fp and not wire.same(client_fp, self._client_fp):
            return False
        self._client_fp = client_fp
        return True

    def _send(self, *fields: Any) -> None:
        self._out += wire.pack(*fields)

    def _refuse(self, reason: str) -> Refused:
        _log.debug("%s refuses the handshake: %s", type(self).__name__, reason)
        self._state = HandshakeState.CLOSED
        self._out.clear()
        del self._buf[:]  # the rest of the peer's flight is never read
        self._pos = 0
        self._out += wire.reject_message(reason)
        return Refused(reason)

    def _complete(self, event: Event) -> Event:
        self._state = HandshakeState.COMPLETE
        return event

    def _digest(self, label: str, *parts: Any) -> bytes:
        return wire.mac(self._key, label, *parts)

    def _binding(self) -> tuple[bytes, bytes]:
        return self._server_fp, self._client_fp


class IntroMachine(BaseMachine):
    """A full handshake's side (dialer or acceptor): it introduces this node.

    Holds what an Introduce says about us and turns the peer's introduction
    into the events the owner sees.
    """

    def __init__(
        self,
        *,
        node_name: str,
        cookie: str,
        server: bool,
        creation: int,
        flags: int = DEFAULT_NETWORK_FLAGS,
        version: str = __version__,
        max_message_size: int = 0,
        **base: Unpack[MachineArgs],
    ) -> None:
        super().__init__(node_name=node_name, cookie=cookie, server=server, **base)
        self._creation = wire.check_uint(creation, U63, "creation")
        self._flags = wire.check_uint(flags, U32, "flags")
        self._version = str(version)[:MAX_VERSION]
        self._max_message_size = wire.check_uint(max_message_size, U63, "max_message_size")

    def _intro(self, replace: bool) -> wire.Intro:
        """Our introduction's fields."""
        return (
            self._name,
            self._version,
            self._flags,
            self._creation,
            self._max_message_size,
            replace,
        )

    @staticmethod
    def _introduced(peer: wire.Intro, replace: bool) -> PeerIntroduced:
        return PeerIntroduced(**_peer_fields(peer), replace=replace)

    @staticmethod
    def _completed(
        peer: wire.Intro, offer: tuple[str, int, tuple[str, ...]], replace: bool
    ) -> HandshakeComplete:
        cid, pool_size, dsn = offer
        return HandshakeComplete(
            **_peer_fields(peer),
            connection_id=cid,
            pool_size=pool_size,
            pool_dsn=dsn,
            replace=replace,
        )


def _peer_fields(peer: wire.Intro) -> dict[str, Any]:
    """The peer's introduction as the ``peer_*`` fields of the events."""
    name, version, flags, creation, max_size, _ = peer
    return {
        "peer_name": name,
        "peer_creation": creation,
        "peer_version": version,
        "peer_flags": NetworkFlags(flags),
        "peer_max_message_size": max_size,
    }
