"""The dialing side of a pool Join: one more link for a connection already up.

A Join names the connection (its id from the full handshake) instead of
introducing the node again; the acceptor's Accept and our confirmation are
bound to both salts and both certificates, as the full handshake's are.
Between the two the owner admits the link (:class:`JoinRequested`).
"""

from __future__ import annotations

from typing import Any, Unpack

from ergo_py.gen.errors import ErrIncorrect
from ergo_py.net.handshake import wire
from ergo_py.net.handshake.machine import BaseMachine, MachineArgs
from ergo_py.net.handshake.types import (
    DIGEST_SIZE,
    FINGERPRINT_SIZE,
    MSG_ACCEPT,
    MSG_JOIN,
    REASON_TLS_BINDING,
    SALT_SIZE,
    AdmissionEvent,
    Event,
    HandshakeState,
    JoinComplete,
    JoinRequested,
)


class JoinHandshake(BaseMachine):
    """Adds a link to connection ``connection_id`` (made by a full handshake)."""

    def __init__(
        self,
        *,
        node_name: str,
        peer_name: str,
        connection_id: str,
        cookie: str,
        **base: Unpack[MachineArgs],
    ) -> None:
        super().__init__(node_name=node_name, cookie=cookie, server=False, **base)
        self._peer_name = wire.check_name(peer_name, "peer_name")
        if type(connection_id) is not str or not connection_id:
            raise ErrIncorrect("connection_id must be a non-empty str")
        self._cid = connection_id
        self._state = HandshakeState.IDLE

    def initiate(self) -> bytes:
        """The Join message; call once, right after the TLS handshake."""
        self._begin()
        d = self._digest("D-join", self._s1, self._cid, self._name, self._server_fp)
        return wire.pack(MSG_JOIN, self._name, self._cid, self._s1, d)

    def _handle(self, msg: list[Any]) -> Event | None:
        wire.expect(msg, MSG_ACCEPT, "the join Accept")
        s2, client_fp, digest = wire.fields(msg, "Accept", (bytes, bytes, bytes))
        self._s2 = wire.check_bytes(s2, SALT_SIZE, "salt")
        wire.check_bytes(client_fp, FINGERPRINT_SIZE, "client fingerprint", allow_empty=True)
        wire.check_bytes(digest, DIGEST_SIZE, "Accept digest")
        if not self._take_client_fp(client_fp):
            return self._refuse(REASON_TLS_BINDING)
        if not wire.same(digest, self._digest("A-join", *self._parts())):
            return self._refuse(REASON_TLS_BINDING)
        return JoinRequested(self._peer_name, self._cid)

    def _admitted(self, event: AdmissionEvent) -> Event | None:
        self._send(MSG_ACCEPT, self._digest("D-join-confirm", *self._parts()))
        return self._complete(JoinComplete(self._peer_name, self._cid))

    def _parts(self) -> tuple[bytes | str, ...]:
        """What the acceptor's Accept and our confirmation are bound to."""
        return (self._s1, self._s2, self._cid, self._name, *self._binding())
