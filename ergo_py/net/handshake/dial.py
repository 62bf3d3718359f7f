"""The dialing side of a full handshake: one round trip after TLS.

Its first flight is Hello and Introduce together; the acceptor's one answer
(Hello, Introduce, Accept) is checked whole, the owner admits the peer
(:class:`PeerIntroduced`), and the dialer's final Accept follows in the same
write as its first frames.
"""

from __future__ import annotations

from typing import Any, Unpack

from ergo_py.gen.errors import RemoteProtocolError
from ergo_py.net.handshake import wire
from ergo_py.net.handshake.machine import IntroArgs, IntroMachine
from ergo_py.net.handshake.types import (
    DIGEST_SIZE,
    FINGERPRINT_SIZE,
    MAX_POOL_SIZE,
    MSG_ACCEPT,
    MSG_HELLO,
    MSG_INTRODUCE,
    REASON_BAD_COOKIE,
    REASON_TLS_BINDING,
    REASON_WRONG_NODE,
    SALT_SIZE,
    AdmissionEvent,
    Event,
    HandshakeState,
)

_HELLO = 1
_INTRODUCE = 2
_ACCEPT = 3


class DialerHandshake(IntroMachine):
    """The side that dialed ``peer_name``; call :meth:`initiate` first.

    A peer that introduces itself under another name is refused
    (``"wrong node"``); any other peer is handed to the owner as
    :class:`PeerIntroduced` before the final Accept. ``replace``: take over
    from the connection already up to that peer (a hand-over; see the package
    docstring).
    """

    def __init__(
        self,
        *,
        node_name: str,
        creation: int,
        peer_name: str,
        cookie: str,
        replace: bool = False,
        **intro: Unpack[IntroArgs],
    ) -> None:
        super().__init__(
            node_name=node_name, creation=creation, cookie=cookie, server=False, **intro
        )
        self._replace = bool(replace)
        self._peer_name = wire.check_name(peer_name, "peer_name")
        self._state = HandshakeState.IDLE
        self._expect = _HELLO
        self._peer: wire.Intro | None = None
        self._offer: tuple[str, int, tuple[str, ...]] | None = None  # id, pool size, dsn

    def initiate(self) -> bytes:
        """The opening Hello and Introduce; call once, right after the TLS handshake."""
        self._begin()
        fields = self._intro(self._replace)
        return wire.pack(MSG_HELLO, self._s1, self._digest("D-hello", self._s1)) + wire.pack(
            MSG_INTRODUCE,
            *fields,
            # The client fingerprint is left out: this side cannot know yet
            # whether the acceptor asked for its certificate. The final Accept
            # covers both fingerprints.
            self._digest("D-intro", self._s1, self._server_fp, *fields),
        )

    def _handle(self, msg: list[Any]) -> Event | None:
        if self._expect == _HELLO:
            return self._on_hello(wire.expect(msg, MSG_HELLO, "Hello"))
        if self._expect == _INTRODUCE:
            return self._on_introduce(wire.expect(msg, MSG_INTRODUCE, "Introduce"))
        return self._on_accept(wire.expect(msg, MSG_ACCEPT, "Accept"))

    def _on_hello(self, msg: list[Any]) -> Event | None:
        server = self._server_fp
        s2, digest, client_fp, digest_cert = wire.fields(msg, "Hello", (bytes, bytes, bytes, bytes))
        self._s2 = wire.check_bytes(s2, SALT_SIZE, "salt")
        wire.check_bytes(digest, DIGEST_SIZE, "Hello digest")
        wire.check_bytes(client_fp, FINGERPRINT_SIZE, "client fingerprint", allow_empty=True)
        wire.check_bytes(digest_cert, DIGEST_SIZE, "Hello certificate digest")
        if not wire.same(digest, self._digest("A-hello", self._s1, self._s2)):
            return self._refuse(REASON_BAD_COOKIE)
        # The acceptor says which client certificate it saw: none (it did
        # not ask) or ours. Anything else is someone else's certificate.
        if not self._take_client_fp(client_fp):
            return self._refuse(REASON_TLS_BINDING)
        expected = self._digest("A-cert", self._s1, self._s2, server, client_fp)
        if not wire.same(digest_cert, expected):
            return self._refuse(REASON_TLS_BINDING)
        self._expect = _INTRODUCE
        return None

    def _on_introduce(self, msg: list[Any]) -> Event | None:
        fields, digest = wire.introduce_fields(msg)
        expected = self._digest("A-intro", self._s1, self._s2, *self._binding(), *fields)
        if not wire.same(digest, expected):
            return self._refuse(REASON_TLS_BINDING)
        if fields[0] != self._peer_name:
            return self._refuse(REASON_WRONG_NODE)
        self._peer = fields
        self._expect = _ACCEPT
        return None

    def _on_accept(self, msg: list[Any]) -> Event | None:
        cid, pool_size, dsn, digest = wire.fields(msg, "Accept", (str, int, wire.StrList, bytes))
        wire.check_bytes(digest, DIGEST_SIZE, "Accept digest")
        if not 1 <= pool_size <= MAX_POOL_SIZE:
            raise RemoteProtocolError("Accept: pool size out of range")
        expected = self._digest(
            "A-accept", self._s1, self._s2, *self._binding(), cid, pool_size, dsn
        )
        if not wire.same(digest, expected):
            return self._refuse(REASON_TLS_BINDING)
        assert self._peer is not None
        name, _, _, creation, _, _ = self._peer
        mine = wire.connection_id(
            self._cookie, self._name, self._creation, name, creation, self._s1 + self._s2
        )
        if not wire.same(cid.encode(), mine.encode()):
            raise RemoteProtocolError("Accept: connection id does not match")
        self._offer = (cid, pool_size, tuple(dsn))
        return self._introduced(self._peer, self._replace)

    def _admitted(self, event: AdmissionEvent) -> Event | None:
        assert self._peer is not None and self._offer is not None
        cid = self._offer[0]
        intro = self._intro(self._replace)
        confirm = self._digest("D-accept", self._s1, self._s2, *self._binding(), cid, *intro)
        self._send(MSG_ACCEPT, confirm)
        return self._complete(self._completed(self._peer, self._offer, self._replace))
