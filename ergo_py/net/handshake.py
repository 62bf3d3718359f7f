"""The handshake (sans-IO): Ergo's "EHS R1" shape with our own msgpack bodies.

Every handshake message is framed ``[87][1][uint32 BE body length][body]``;
the body is a msgpack array ``[type, fields...]``. The exchange (D = dialer,
A = acceptor; every digest is HMAC-SHA256 keyed by the cookie over a labelled,
msgpack-encoded list of its inputs)::

    D -> A  Hello{s1, digest(s1)}                       A checks the cookie
            Introduce{node, version, flags, creation, max_message_size, replace,
                      digest(s1, server_fp, fields)}     and who is dialing
    A -> D  Hello{s2, digest(s1, s2), client_fp,        D checks the cookie and
                  digest_cert(s1, s2, server_fp, client_fp)}   the TLS binding
            Introduce{...A's fields..., digest}  Accept{id, pool_size, pool_dsn, digest}
    D -> A  Accept{digest(s1, s2, fingerprints, id, D's fields)}   both complete

The dialer's first flight carries its Introduce, so the dialer is done after
one round trip (its first frames follow its Accept in the same write) and the
acceptor after one and a half. Nothing is decided on the strength of the first
flight alone: the acceptor only *checks* the introduction (it may refuse it);
the connection comes up when the dialer's Accept, whose digest covers the
acceptor's fresh salt and both fingerprints, proves the dialer is live.

Extra pool links (after a full handshake) use a Join::

    D -> A  Join{node, id, s1, digest(s1, id, node, server_fp)}
    A -> D  Accept{s2, client_fp, digest(s1, s2, id, node, server_fp, client_fp)}
    D -> A  Accept{digest(...)}                         both sides complete

Either side may answer with ``Reject{reason}`` instead.

``replace`` (the dialer's; the acceptor sends False): this connection is to
take over from the one already up between the same two node incarnations (a
hand-over after a certificate rotation), instead of being refused as a
duplicate. The old one is then drained with Close frames (see ``frames``).

**TLS binding.** Each machine is built with the SHA-256 fingerprints of the
certificates *as presented on this connection*: ``local_cert_fp`` (ours) and
``peer_cert_fp`` (the peer's, from the TLS layer), each 32 bytes or None. The
server fingerprint and the client fingerprint both enter the digests. A
CPython client cannot tell whether its certificate was requested, so A's Hello
states the client fingerprint A saw; D refuses it if it names a certificate D
did not present. A man in the middle that terminates TLS must present its own
certificate to at least one side, so the digests disagree and the handshake
fails with reason ``"tls binding mismatch"``.

**Use.** Feed bytes with ``receive_data``; call ``next_event`` until it
returns :data:`NEED_DATA`; after every call write out ``data_to_send()``.
Once :class:`HandshakeComplete` or :class:`JoinComplete` comes out, bytes that
followed the last handshake message are in ``trailing_data`` (the first
frames; hand them to the frame decoder). A :class:`Refused` event means we
refused the peer: send ``data_to_send()`` (the Reject) and close.

Malformed or unexpected messages raise ``gen.RemoteProtocolError`` (call
``reject()`` for a Reject to send); a message above the size limit raises
``gen.ErrTooLarge`` before its body is buffered. **Timeouts are the
transport's business**: the machine has no clock; the transport bounds the
whole handshake (``handshake_timeout``) and may send ``reject("timeout")``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

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
    DEFAULT_POOL_SIZE,
    MAX_NODE_NAME_BYTES,
    NetworkFlags,
)

_log = logging.getLogger(__name__)

MAGIC: Final = 87
VERSION: Final = 2  # 2: the dialer's Introduce rides in its first flight
HEADER_SIZE: Final = 6
_HEADER = struct.Struct(">BBI")

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
_DIGEST_SIZE = 32
_MAX_REASON = 255
_MAX_VERSION = 255
_MAX_DSN = 16
_MAX_POOL_SIZE = 255
_U32 = 1 << 32
_U63 = 1 << 63


# --- events ---------------------------------------------------------------------


class _NeedData:
    """The type of :data:`NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""``next_event()`` needs more bytes (or the handshake is over)."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Both sides agreed; the link carries frames from now on.

    ``pool_size``/``pool_dsn`` are what the acceptor offered (a dialer opens
    ``pool_size - 1`` more links with :class:`JoinHandshake`).
    """

    peer_name: str
    peer_creation: int
    peer_version: str
    peer_flags: NetworkFlags
    peer_max_message_size: int
    connection_id: str
    pool_size: int
    pool_dsn: tuple[str, ...]
    replace: bool = False


@dataclass(frozen=True, slots=True)
class JoinComplete:
    """An extra pool link joined connection ``connection_id`` to ``peer_name``."""

    peer_name: str
    connection_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The peer refused the handshake with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """We refused the peer with ``reason``; a Reject waits in ``data_to_send()``."""

    reason: str


Event = HandshakeComplete | JoinComplete | Rejected | Refused


class HandshakeState(enum.Enum):
    """Where a machine is, coarsely."""

    IDLE = "idle"  # a dialer before initiate()
    RUNNING = "running"
    COMPLETE = "complete"
    CLOSED = "closed"  # rejected or refused
    ERROR = "error"  # a protocol error was raised


# --- helpers --------------------------------------------------------------------


def connection_id(
    cookie: str, name_a: str, creation_a: int, name_b: str, creation_b: int, salts: bytes = b""
) -> str:
    """The connection ID both ends compute: hex HMAC-SHA256 keyed by the cookie.

    The input is ``"name:creation:name:creation"`` with the smaller name first,
    so the dialer and the acceptor agree whichever way the link was made, then
    the handshake's two salts: two connections between the same incarnations
    (one replacing the other) never share an ID, so a late pool Join cannot
    attach to the wrong one.
    """
    (x, cx), (y, cy) = sorted(((name_a, creation_a), (name_b, creation_b)))
    msg = f"{x}:{cx}:{y}:{cy}:".encode() + salts
    return hmac.new(cookie.encode(), msg, hashlib.sha256).hexdigest()


def _mac(key: bytes, label: str, *parts: Any) -> bytes:
    return hmac.new(key, msgpack.packb([label, *parts], use_bin_type=True), hashlib.sha256).digest()


def _fp(value: bytes | None, what: str) -> bytes:
    if value is None:
        return b""
    if type(value) is not bytes or len(value) != FINGERPRINT_SIZE:
        raise ErrIncorrect(f"{what} must be a {FINGERPRINT_SIZE}-byte SHA-256 digest or None")
    return value


def _check_uint(value: Any, bound: int, what: str) -> int:
    """A local setting that must fit the wire: an int in ``0 <= value < bound``."""
    if type(value) is bool or not isinstance(value, int) or not 0 <= value < bound:
        raise ErrIncorrect(f"{what} must be an int in 0..{bound - 1}")
    return int(value)


def _check_name(name: Any, what: str) -> str:
    if type(name) is not str or not name or len(name.encode()) > MAX_NODE_NAME_BYTES:
        raise ErrIncorrect(f"{what} must be a non-empty node name of at most 255 bytes")
    return name


class _StrList:
    """Field marker: a list of short strings."""


_FieldSpec = type | type[_StrList]


def _pack(*fields: Any) -> bytes:
    body: bytes = msgpack.packb(list(fields), use_bin_type=True)
    return _HEADER.pack(MAGIC, VERSION, len(body)) + body


def _printable(text: str) -> str:
    """The peer's text with control characters replaced: it ends up in our logs."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def reject_message(reason: str) -> bytes:
    """A framed ``Reject{reason}``, for a transport that refuses before any machine runs."""
    return _pack(MSG_REJECT, reason[:_MAX_REASON])


# --- the common machine -----------------------------------------------------------


class _Machine:
    """Buffering, message splitting, the outbox and the terminal states."""

    _expect: int  # the private step we are in; meaning depends on the subclass

    def __init__(
        self,
        *,
        cookie: str,
        local_cert_fp: bytes | None,
        peer_cert_fp: bytes | None,
        max_handshake_size: int,
        server: bool,
    ) -> None:
        if type(cookie) is not str:
            raise ErrIncorrect("cookie must be a str")
        if _check_uint(max_handshake_size, _U32, "max_handshake_size") == 0:
            raise ErrIncorrect("max_handshake_size must be positive")
        self._key = cookie.encode()
        self._cookie = cookie
        local = _fp(local_cert_fp, "local_cert_fp")
        peer = _fp(peer_cert_fp, "peer_cert_fp")
        # Our own view of (server fp, client fp) on this connection.
        self._server_fp = local if server else peer
        self._client_fp = peer if server else local
        self._max = max_handshake_size
        self._buf = bytearray()
        self._pos = 0
        self._out = bytearray()
        self._state = HandshakeState.RUNNING
        self._error: Exception | None = None
        self._s1 = b""
        self._s2 = b""

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
        self._out.clear()
        return reject_message(reason)

    def next_event(self) -> Event | _NeedData:
        """The next event, or :data:`NEED_DATA`.

        Raises ``gen.RemoteProtocolError`` for anything malformed or out of
        place and ``gen.ErrTooLarge`` for an oversized message; after that the
        machine is broken and raises the same error again.
        """
        if self._error is not None:
            raise self._error
        try:
            while self._state is HandshakeState.RUNNING:
                msg = self._read_message()
                if msg is None:
                    return NEED_DATA
                if msg[0] == MSG_REJECT:
                    (reason,) = self._fields(msg, "Reject", (str,))
                    self._state = HandshakeState.CLOSED
                    return Rejected(_printable(reason[:_MAX_REASON]))
                event = self._handle(msg)
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

    def _send(self, *fields: Any) -> None:
        self._out += _pack(*fields)

    def _refuse(self, reason: str) -> Refused:
        _log.debug("%s refuses the handshake: %s", type(self).__name__, reason)
        self._state = HandshakeState.CLOSED
        self._out.clear()
        del self._buf[:]  # the rest of the peer's flight is never read
        self._pos = 0
        self._out += reject_message(reason)
        return Refused(reason)

    def _complete(self, event: Event) -> Event:
        self._state = HandshakeState.COMPLETE
        return event

    def _digest(self, label: str, *parts: Any) -> bytes:
        return _mac(self._key, label, *parts)

    def _binding(self) -> tuple[bytes, bytes]:
        return self._server_fp, self._client_fp

    @staticmethod
    def _same(a: bytes, b: bytes) -> bool:
        return hmac.compare_digest(a, b)

    def _read_message(self) -> list[Any] | None:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            return None
        magic, version, length = _HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise RemoteProtocolError(f"bad handshake magic {magic}")
        if version != VERSION:
            raise RemoteProtocolError(f"unsupported handshake version {version}")
        if length > self._max:
            raise ErrTooLarge(f"handshake message of {length} bytes exceeds {self._max}")
        if length == 0:
            raise RemoteProtocolError("empty handshake message")
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            return None
        body = bytes(buf[pos + HEADER_SIZE : end])
        self._pos = end
        try:
            msg = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:
            raise RemoteProtocolError(f"malformed handshake message: {exc}") from None
        if type(msg) is not list or not msg or type(msg[0]) is not int:
            raise RemoteProtocolError("handshake message is not [type, fields...]")
        return msg

    @staticmethod
    def _fields(msg: list[Any], what: str, spec: Sequence[_FieldSpec]) -> list[Any]:
        if len(msg) != len(spec) + 1:
            raise RemoteProtocolError(f"{what}: expected {len(spec)} fields, got {len(msg) - 1}")
        values = msg[1:]
        for i, (value, kind) in enumerate(zip(values, spec, strict=True)):
            if kind is _StrList:
                if (
                    type(value) is not list
                    or len(value) > _MAX_DSN
                    or any(type(v) is not str for v in value)
                ):
                    raise RemoteProtocolError(f"{what}: field {i} is not a list of strings")
            elif type(value) is not kind:
                raise RemoteProtocolError(f"{what}: field {i} is not {kind.__name__}")
        return values

    @staticmethod
    def _unexpected(msg: list[Any], step: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"unexpected handshake message type {msg[0]} while {step}")

    @staticmethod
    def _bytes(value: bytes, size: int, what: str, allow_empty: bool = False) -> bytes:
        if len(value) != size and not (allow_empty and not value):
            raise RemoteProtocolError(f"{what} must be {size} bytes")
        return value


_Intro = tuple[str, str, int, int, int, bool]


def _introduce_fields(msg: list[Any]) -> tuple[_Intro, bytes]:
    name, version, flags, creation, max_size, replace, digest = _Machine._fields(
        msg, "Introduce", (str, str, int, int, int, bool, bytes)
    )
    if not name or len(name.encode()) > MAX_NODE_NAME_BYTES:
        raise RemoteProtocolError("Introduce: bad node name")
    if len(version) > _MAX_VERSION:
        raise RemoteProtocolError("Introduce: version string too long")
    if not 0 <= flags < _U32:
        raise RemoteProtocolError("Introduce: flags out of range")
    if not 0 <= creation < _U63:
        raise RemoteProtocolError("Introduce: creation out of range")
    if not 0 <= max_size < _U63:
        raise RemoteProtocolError("Introduce: max message size out of range")
    _Machine._bytes(digest, _DIGEST_SIZE, "Introduce digest")
    return (name, version, flags, creation, max_size, replace), digest


def _simultaneous(flags_a: int, flags_b: int) -> bool:
    bit = int(NetworkFlags.ENABLE_SIMULTANEOUS_CONNECT)
    return bool(flags_a & bit) and bool(flags_b & bit)


# --- dialer ------------------------------------------------------------------------

_D_HELLO = 1
_D_INTRODUCE = 2
_D_ACCEPT = 3


class DialerHandshake(_Machine):
    """The side that dialed ``peer_name``; call :meth:`initiate` first.

    A peer that introduces itself under another name is refused
    (``"wrong node"``). ``replace``: take over from the connection already up
    to that peer (see the module docstring).
    """

    def __init__(
        self,
        *,
        node_name: str,
        creation: int,
        peer_name: str,
        cookie: str,
        flags: int = DEFAULT_NETWORK_FLAGS,
        version: str = __version__,
        max_message_size: int = 0,
        local_cert_fp: bytes | None = None,
        peer_cert_fp: bytes | None = None,
        max_handshake_size: int = DEFAULT_HANDSHAKE_MAX_MESSAGE_SIZE,
        replace: bool = False,
    ) -> None:
        super().__init__(
            cookie=cookie,
            local_cert_fp=local_cert_fp,
            peer_cert_fp=peer_cert_fp,
            max_handshake_size=max_handshake_size,
            server=False,
        )
        self._replace = bool(replace)
        self._name = _check_name(node_name, "node_name")
        self._peer_name = _check_name(peer_name, "peer_name")
        self._creation = _check_uint(creation, _U63, "creation")
        self._flags = _check_uint(flags, _U32, "flags")
        self._version = str(version)[:_MAX_VERSION]
        self._max_message_size = _check_uint(max_message_size, _U63, "max_message_size")
        self._state = HandshakeState.IDLE
        self._expect = _D_HELLO
        self._peer: _Intro | None = None

    def initiate(self) -> bytes:
        """The opening Hello; call once, right after the TLS handshake."""
        if self._state is not HandshakeState.IDLE:
            raise LocalProtocolError("initiate() may be called only once")
        self._state = HandshakeState.RUNNING
        self._s1 = os.urandom(SALT_SIZE)
        fields = self._intro()
        return _pack(MSG_HELLO, self._s1, self._digest("D-hello", self._s1)) + _pack(
            MSG_INTRODUCE,
            *fields,
            # The client fingerprint is left out: this side cannot know yet
            # whether the acceptor asked for its certificate. The final Accept
            # covers both fingerprints.
            self._digest("D-intro", self._s1, self._server_fp, *fields),
        )

    def _intro(self) -> _Intro:
        return (
            self._name,
            self._version,
            self._flags,
            self._creation,
            self._max_message_size,
            self._replace,
        )

    def next_event(self) -> Event | _NeedData:
        if self._state is HandshakeState.IDLE:
            raise LocalProtocolError("call initiate() first")
        return super().next_event()

    def _handle(self, msg: list[Any]) -> Event | None:
        server, client_seen = self._binding()
        if self._expect == _D_HELLO:
            if msg[0] != MSG_HELLO:
                raise self._unexpected(msg, "waiting for Hello")
            s2, digest, client_fp, digest_cert = self._fields(
                msg, "Hello", (bytes, bytes, bytes, bytes)
            )
            self._s2 = self._bytes(s2, SALT_SIZE, "salt")
            self._bytes(digest, _DIGEST_SIZE, "Hello digest")
            self._bytes(client_fp, FINGERPRINT_SIZE, "client fingerprint", allow_empty=True)
            self._bytes(digest_cert, _DIGEST_SIZE, "Hello certificate digest")
            if not self._same(digest, self._digest("A-hello", self._s1, self._s2)):
                return self._refuse(REASON_BAD_COOKIE)
            # The acceptor says which client certificate it saw: none (it did
            # not ask) or ours. Anything else is someone else's certificate.
            if client_fp and not self._same(client_fp, client_seen):
                return self._refuse(REASON_TLS_BINDING)
            self._client_fp = client_fp
            expected = self._digest("A-cert", self._s1, self._s2, server, client_fp)
            if not self._same(digest_cert, expected):
                return self._refuse(REASON_TLS_BINDING)
            self._expect = _D_INTRODUCE
            return None
        if self._expect == _D_INTRODUCE:
            if msg[0] != MSG_INTRODUCE:
                raise self._unexpected(msg, "waiting for Introduce")
            fields, digest = _introduce_fields(msg)
            expected = self._digest("A-intro", self._s1, self._s2, *self._binding(), *fields)
            if not self._same(digest, expected):
                return self._refuse(REASON_TLS_BINDING)
            if fields[0] != self._peer_name:
                return self._refuse(REASON_WRONG_NODE)
            self._peer = fields
            self._expect = _D_ACCEPT
            return None
        if msg[0] != MSG_ACCEPT:
            raise self._unexpected(msg, "waiting for Accept")
        cid, pool_size, dsn, digest = self._fields(msg, "Accept", (str, int, _StrList, bytes))
        self._bytes(digest, _DIGEST_SIZE, "Accept digest")
        if not 1 <= pool_size <= _MAX_POOL_SIZE:
            raise RemoteProtocolError("Accept: pool size out of range")
        expected = self._digest(
            "A-accept", self._s1, self._s2, *self._binding(), cid, pool_size, dsn
        )
        if not self._same(digest, expected):
            return self._refuse(REASON_TLS_BINDING)
        assert self._peer is not None
        name, version, flags, creation, max_size, _ = self._peer
        mine = connection_id(
            self._cookie, self._name, self._creation, name, creation, self._s1 + self._s2
        )
        if not self._same(cid.encode(), mine.encode()):
            raise RemoteProtocolError("Accept: connection id does not match")
        confirm = self._digest(
            "D-accept", self._s1, self._s2, *self._binding(), cid, *self._intro()
        )
        self._send(MSG_ACCEPT, confirm)
        return self._complete(
            HandshakeComplete(
                peer_name=name,
                peer_creation=creation,
                peer_version=version,
                peer_flags=NetworkFlags(flags),
                peer_max_message_size=max_size,
                connection_id=cid,
                pool_size=pool_size,
                pool_dsn=tuple(dsn),
                replace=self._replace,
            )
        )


# --- join (dialer side of an extra pool link) ----------------------------------------------


class JoinHandshake(_Machine):
    """Adds a link to connection ``connection_id`` (made by a full handshake)."""

    def __init__(
        self,
        *,
        node_name: str,
        peer_name: str,
        connection_id: str,
        cookie: str,
        local_cert_fp: bytes | None = None,
        peer_cert_fp: bytes | None = None,
        max_handshake_size: int = DEFAULT_HANDSHAKE_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(
            cookie=cookie,
            local_cert_fp=local_cert_fp,
            peer_cert_fp=peer_cert_fp,
            max_handshake_size=max_handshake_size,
            server=False,
        )
        self._name = _check_name(node_name, "node_name")
        self._peer_name = _check_name(peer_name, "peer_name")
        if type(connection_id) is not str or not connection_id:
            raise ErrIncorrect("connection_id must be a non-empty str")
        self._cid = connection_id
        self._state = HandshakeState.IDLE

    def initiate(self) -> bytes:
        """The Join message; call once, right after the TLS handshake."""
        if self._state is not HandshakeState.IDLE:
            raise LocalProtocolError("initiate() may be called only once")
        self._state = HandshakeState.RUNNING
        self._s1 = os.urandom(SALT_SIZE)
        d = self._digest("D-join", self._s1, self._cid, self._name, self._server_fp)
        return _pack(MSG_JOIN, self._name, self._cid, self._s1, d)

    def next_event(self) -> Event | _NeedData:
        if self._state is HandshakeState.IDLE:
            raise LocalProtocolError("call initiate() first")
        return super().next_event()

    def _handle(self, msg: list[Any]) -> Event | None:
        if msg[0] != MSG_ACCEPT:
            raise self._unexpected(msg, "waiting for the join Accept")
        s2, client_fp, digest = self._fields(msg, "Accept", (bytes, bytes, bytes))
        self._s2 = self._bytes(s2, SALT_SIZE, "salt")
        self._bytes(client_fp, FINGERPRINT_SIZE, "client fingerprint", allow_empty=True)
        self._bytes(digest, _DIGEST_SIZE, "Accept digest")
        if client_fp and not self._same(client_fp, self._client_fp):
            return self._refuse(REASON_TLS_BINDING)
        self._client_fp = client_fp
        parts = (self._s1, self._s2, self._cid, self._name, *self._binding())
        if not self._same(digest, self._digest("A-join", *parts)):
            return self._refuse(REASON_TLS_BINDING)
        self._send(MSG_ACCEPT, self._digest("D-join-confirm", *parts))
        return self._complete(JoinComplete(self._peer_name, self._cid))


# --- acceptor ----------------------------------------------------------------------------

_A_FIRST = 1
_A_INTRODUCE = 2
_A_FINAL = 3
_A_JOIN_CONFIRM = 4


class AcceptorHandshake(_Machine):
    """The accepting side: answers a full handshake or a Join.

    Callbacks (all optional, called synchronously from ``next_event``):

    * ``has_pending_dial(peer_name)``: we are dialing that node ourselves. If
      both sides enable ``ENABLE_SIMULTANEOUS_CONNECT`` and our name is the
      smaller, we refuse with ``"simultaneous"`` (our own dial wins, so the
      pair ends with one connection, made by the smaller name).
    * ``check_peer(peer_name, creation, replace)``: a reason to refuse (e.g.
      ``"name taken"``, ``"busy"``) or None to go on; ``replace`` is the
      dialer's wish to take over from a connection already up. A peer introducing
      our own name is refused with ``"name taken"`` before any callback.
    * ``lookup_connection(connection_id)``: the peer name of an established
      connection, or None. Without it every Join is refused.
    """

    def __init__(
        self,
        *,
        node_name: str,
        creation: int,
        cookie: str,
        flags: int = DEFAULT_NETWORK_FLAGS,
        version: str = __version__,
        max_message_size: int = 0,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_dsn: Sequence[str] = (),
        local_cert_fp: bytes | None = None,
        peer_cert_fp: bytes | None = None,
        has_pending_dial: Callable[[str], bool] | None = None,
        check_peer: Callable[[str, int, bool], str | None] | None = None,
        lookup_connection: Callable[[str], str | None] | None = None,
        max_handshake_size: int = DEFAULT_HANDSHAKE_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(
            cookie=cookie,
            local_cert_fp=local_cert_fp,
            peer_cert_fp=peer_cert_fp,
            max_handshake_size=max_handshake_size,
            server=True,
        )
        self._name = _check_name(node_name, "node_name")
        self._creation = _check_uint(creation, _U63, "creation")
        self._flags = _check_uint(flags, _U32, "flags")
        self._version = str(version)[:_MAX_VERSION]
        self._max_message_size = _check_uint(max_message_size, _U63, "max_message_size")
        if not 1 <= pool_size <= _MAX_POOL_SIZE:
            raise ErrIncorrect("pool_size must be in 1..255")
        if len(pool_dsn) > _MAX_DSN:
            raise ErrIncorrect(f"at most {_MAX_DSN} pool addresses")
        self._pool_size = pool_size
        self._pool_dsn = [str(a) for a in pool_dsn]
        self._has_pending_dial = has_pending_dial
        self._check_peer = check_peer
        self._lookup = lookup_connection
        self._expect = _A_FIRST
        self._peer_name = ""
        self._cid = ""
        self._result: HandshakeComplete | None = None
        self._peer_intro: _Intro | None = None

    def _handle(self, msg: list[Any]) -> Event | None:
        if self._expect == _A_FIRST:
            if msg[0] == MSG_HELLO:
                return self._on_hello(msg)
            if msg[0] == MSG_JOIN:
                return self._on_join(msg)
            raise self._unexpected(msg, "waiting for Hello or Join")
        if self._expect == _A_INTRODUCE:
            if msg[0] != MSG_INTRODUCE:
                raise self._unexpected(msg, "waiting for Introduce")
            return self._on_introduce(msg)
        if msg[0] != MSG_ACCEPT:
            raise self._unexpected(msg, "waiting for the final Accept")
        (digest,) = self._fields(msg, "Accept", (bytes,))
        if self._expect == _A_FINAL:
            assert self._peer_intro is not None
            binding = self._binding()
            confirm = self._digest(
                "D-accept", self._s1, self._s2, *binding, self._cid, *self._peer_intro
            )
            if not self._same(digest, confirm):
                return self._refuse(REASON_TLS_BINDING)
            assert self._result is not None
            return self._complete(self._result)
        parts = (self._s1, self._s2, self._cid, self._peer_name, *self._binding())
        if not self._same(digest, self._digest("D-join-confirm", *parts)):
            return self._refuse(REASON_TLS_BINDING)
        return self._complete(JoinComplete(self._peer_name, self._cid))

    def _on_hello(self, msg: list[Any]) -> Event | None:
        s1, digest = self._fields(msg, "Hello", (bytes, bytes))
        self._s1 = self._bytes(s1, SALT_SIZE, "salt")
        self._bytes(digest, _DIGEST_SIZE, "Hello digest")
        if not self._same(digest, self._digest("D-hello", self._s1)):
            return self._refuse(REASON_BAD_COOKIE)
        self._expect = _A_INTRODUCE  # in the same flight; answered together
        return None

    def _on_introduce(self, msg: list[Any]) -> Event | None:
        fields, digest = _introduce_fields(msg)
        expected = self._digest("D-intro", self._s1, self._server_fp, *fields)
        if not self._same(digest, expected):
            return self._refuse(REASON_TLS_BINDING)
        name, version, flags, creation, max_size, replace = fields
        if name == self._name:  # a node cannot connect to its own name
            return self._refuse(REASON_NAME_TAKEN)
        if (
            _simultaneous(self._flags, flags)
            and self._has_pending_dial is not None
            and self._name < name
            and self._has_pending_dial(name)
        ):
            return self._refuse(REASON_SIMULTANEOUS)
        if self._check_peer is not None:
            reason = self._check_peer(name, creation, replace)
            if reason is not None:
                return self._refuse(reason)
        self._peer_intro = fields
        self._s2 = os.urandom(SALT_SIZE)
        server, client = self._binding()
        self._send(
            MSG_HELLO,
            self._s2,
            self._digest("A-hello", self._s1, self._s2),
            client,
            self._digest("A-cert", self._s1, self._s2, server, client),
        )
        self._cid = connection_id(
            self._cookie, self._name, self._creation, name, creation, self._s1 + self._s2
        )
        ours = (
            self._name,
            self._version,
            self._flags,
            self._creation,
            self._max_message_size,
            False,
        )
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
        self._result = HandshakeComplete(
            peer_name=name,
            peer_creation=creation,
            peer_version=version,
            peer_flags=NetworkFlags(flags),
            peer_max_message_size=max_size,
            connection_id=self._cid,
            pool_size=self._pool_size,
            pool_dsn=tuple(self._pool_dsn),
            replace=replace,
        )
        self._expect = _A_FINAL
        return None

    def _on_join(self, msg: list[Any]) -> Event | None:
        name, cid, s1, digest = self._fields(msg, "Join", (str, str, bytes, bytes))
        if not name or len(name.encode()) > MAX_NODE_NAME_BYTES or len(cid) > 128:
            raise RemoteProtocolError("Join: bad node name or connection id")
        self._s1 = self._bytes(s1, SALT_SIZE, "salt")
        self._bytes(digest, _DIGEST_SIZE, "Join digest")
        # The dialer's digest covers the server certificate it saw: a relay
        # showing its own certificate fails here.
        if not self._same(digest, self._digest("D-join", self._s1, cid, name, self._server_fp)):
            return self._refuse(REASON_BAD_COOKIE)
        known = self._lookup(cid) if self._lookup is not None else None
        if known is None or known != name:
            return self._refuse(REASON_UNKNOWN_CONNECTION)
        self._peer_name = name
        self._cid = cid
        self._s2 = os.urandom(SALT_SIZE)
        parts = (self._s1, self._s2, cid, name, *self._binding())
        self._send(MSG_ACCEPT, self._s2, self._client_fp, self._digest("A-join", *parts))
        self._expect = _A_JOIN_CONFIRM
        return None
