"""The accepting side: answers a dialer's full handshake or a pool Join.

The acceptor checks the dialer's first flight (cookie, TLS binding, that it
is not us), hands the introduction to its owner (:class:`PeerIntroduced`)
and, once admitted, answers it in one flight; it completes only on the
dialer's final Accept, whose digest covers the acceptor's fresh salt, so a
replayed first flight never brings a connection up. A Join goes the same
way (:class:`JoinRequested`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Unpack

from ergo_py.gen.errors import ErrIncorrect, RemoteProtocolError
from ergo_py.gen.options import (
    DEFAULT_POOL_SIZE,
    MAX_NODE_NAME_BYTES,
)
from ergo_py.net.handshake import wire
from ergo_py.net.handshake.machine import IntroArgs, IntroMachine
from ergo_py.net.handshake.types import (
    DIGEST_SIZE,
    MAX_DSN,
    MAX_POOL_SIZE,
    MSG_ACCEPT,
    MSG_HELLO,
    MSG_INTRODUCE,
    MSG_JOIN,
    REASON_BAD_COOKIE,
    REASON_NAME_TAKEN,
    REASON_TLS_BINDING,
    SALT_SIZE,
    AdmissionEvent,
    Event,
    HandshakeComplete,
    JoinComplete,
    JoinRequested,
)

_FIRST = 1
_INTRODUCE = 2
_FINAL = 3
_JOIN_CONFIRM = 4


class AcceptorHandshake(IntroMachine):
    """The accepting side: answers a full handshake or a Join.

    Who may come in is the owner's call: a checked introduction comes out as
    :class:`PeerIntroduced`, a checked Join as :class:`JoinRequested`, and
    nothing is sent until ``admit()`` or ``refuse(reason)``. The machine
    itself refuses only what is wrong on the wire, and a peer introducing
    our own name (``"name taken"``) without asking.
    """

    def __init__(
        self,
        *,
        node_name: str,
        creation: int,
        cookie: str,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_dsn: Sequence[str] = (),
        **intro: Unpack[IntroArgs],
    ) -> None:
        super().__init__(
            node_name=node_name, creation=creation, cookie=cookie, server=True, **intro
        )
        if not 1 <= pool_size <= MAX_POOL_SIZE:
            raise ErrIncorrect("pool_size must be in 1..255")
        if len(pool_dsn) > MAX_DSN:
            raise ErrIncorrect(f"at most {MAX_DSN} pool addresses")
        self._pool_size = pool_size
        self._pool_dsn = [str(a) for a in pool_dsn]
        self._expect = _FIRST
        self._peer_name = ""
        self._cid = ""
        self._result: HandshakeComplete | None = None
        self._peer_intro: wire.Intro | None = None

    def _handle(self, msg: list[Any]) -> Event | None:
        if self._expect == _FIRST:
            if msg[0] == MSG_HELLO:
                return self._on_hello(msg)
            if msg[0] == MSG_JOIN:
                return self._on_join(msg)
            raise wire.unexpected(msg, "waiting for Hello or Join")
        if self._expect == _INTRODUCE:
            return self._on_introduce(wire.expect(msg, MSG_INTRODUCE, "Introduce"))
        wire.expect(msg, MSG_ACCEPT, "the final Accept")
        (digest,) = wire.fields(msg, "Accept", (bytes,))
        if self._expect == _FINAL:
            assert self._peer_intro is not None
            binding = self._binding()
            confirm = self._digest(
                "D-accept", self._s1, self._s2, *binding, self._cid, *self._peer_intro
            )
            if not wire.same(digest, confirm):
                return self._refuse(REASON_TLS_BINDING)
            assert self._result is not None
            return self._complete(self._result)
        parts = (self._s1, self._s2, self._cid, self._peer_name, *self._binding())
        if not wire.same(digest, self._digest("D-join-confirm", *parts)):
            return self._refuse(REASON_TLS_BINDING)
        return self._complete(JoinComplete(self._peer_name, self._cid))

    def _on_hello(self, msg: list[Any]) -> Event | None:
        s1, digest = wire.fields(msg, "Hello", (bytes, bytes))
        self._s1 = wire.check_bytes(s1, SALT_SIZE, "salt")
        wire.check_bytes(digest, DIGEST_SIZE, "Hello digest")
        if not wire.same(digest, self._digest("D-hello", self._s1)):
            return self._refuse(REASON_BAD_COOKIE)
        self._expect = _INTRODUCE  # in the same flight; answered together
        return None

    def _on_introduce(self, msg: list[Any]) -> Event | None:
        fields, digest = wire.introduce_fields(msg)
        expected = self._digest("D-intro", self._s1, self._server_fp, *fields)
        if not wire.same(digest, expected):
            return self._refuse(REASON_TLS_BINDING)
        if fields[0] == self._name:  # a node cannot connect to its own name
            return self._refuse(REASON_NAME_TAKEN)
        self._peer_intro = fields
        return self._introduced(fields, fields[5])

    def _admitted(self, event: AdmissionEvent) -> Event | None:
        if isinstance(event, JoinRequested):
            self._answer_join(event)
        else:
            self._answer_introduce()
        return None

    def _answer_introduce(self) -> None:
        assert self._peer_intro is not None
        name, _, _, creation, _, replace = self._peer_intro
        self._s2 = os.urandom(SALT_SIZE)
        server, client = self._binding()
        self._send(
            MSG_HELLO,
            self._s2,
            self._digest("A-hello", self._s1, self._s2),
            client,
            self._digest("A-cert", self._s1, self._s2, server, client),
        )
        self._cid = wire.connection_id(
            self._cookie, self._name, self._creation, name, creation, self._s1 + self._s2
        )
        ours = self._intro(False)
        binding = self._binding()
        self._send(
            MSG_INTRODUCE,
            *ours,
            self._digest("A-intro", self._s1, self._s2, *binding, *ours),
        )
        offer = (self._cid, self._pool_size, self._pool_dsn)
        self._send(
            MSG_ACCEPT,
            *offer,
            self._digest("A-accept", self._s1, self._s2, *binding, *offer),
        )
        agreed = (self._cid, self._pool_size, tuple(self._pool_dsn))
        self._result = self._completed(self._peer_intro, agreed, replace)
        self._expect = _FINAL

    def _on_join(self, msg: list[Any]) -> Event | None:
        name, cid, s1, digest = wire.fields(msg, "Join", (str, str, bytes, bytes))
        if not name or len(name.encode()) > MAX_NODE_NAME_BYTES or len(cid) > 128:
            raise RemoteProtocolError("Join: bad node name or connection id")
        self._s1 = wire.check_bytes(s1, SALT_SIZE, "salt")
        wire.check_bytes(digest, DIGEST_SIZE, "Join digest")
        # The dialer's digest covers the server certificate it saw: a relay
        # showing its own certificate fails here.
        expected = self._digest("D-join", self._s1, cid, name, self._server_fp)
        if not wire.same(digest, expected):
            return self._refuse(REASON_BAD_COOKIE)
        return JoinRequested(name, cid)

    def _answer_join(self, event: JoinRequested) -> None:
        self._peer_name = event.peer_name
        self._cid = event.connection_id
        self._s2 = os.urandom(SALT_SIZE)
        parts = (self._s1, self._s2, self._cid, self._peer_name, *self._binding())
        self._send(MSG_ACCEPT, self._s2, self._client_fp, self._digest("A-join", *parts))
        self._expect = _JOIN_CONFIRM
