"""EHS, Ergo's handshake (rev. 1), as sans-IO machines: bytes in, bytes and a result out.

Each message is ``87, 1, u32 length`` and an EDF-encoded struct. The cookie
is proven by salted SHA-256 digests both ways; over TLS the acceptor also
binds its certificate (SHA-1 of the leaf it served) into a digest the dialer
checks. Unlike our own handshake, the dialer's certificate is bound to
nothing: Ergo's dialer presents none.

Dialer:   Hello ->  <- Hello   Introduce ->  <- Accept(id, pool)  <- Introduce   Accept ->
Acceptor: the mirror image. A pool link instead sends Join and gets Accept.

A wrong cookie ends the handshake with ``HandshakeRejected`` on the side
that notices (Ergo sends no refusal: the other side sees the connection
close); anything malformed is a ``RemoteProtocolError``.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ergo_py._version import __version__
from ergo_py.gen.errors import HandshakeRejected, RemoteProtocolError
from ergo_py.net.ergo import edf

MAGIC, VERSION = 87, 1
MAX_MESSAGE = 0xFFFF  # Ergo refuses longer handshake messages
_HEADER = struct.Struct(">BBI")
_GEN = "#ergo.services/ergo/gen/"
_EHS = "#ergo.services/ergo/net/handshake/"
FLAGS_ENABLE = 1  # what we offer: the basics (no "important" delivery, proxies, fragments)
FLAG_REMOTE_SPAWN = 2  # and remote spawn, when the node enables it (Ergo's EnableRemoteSpawn)
COOKIE_HINT = "the cookies differ (or the peer is not an Ergo node)"


@dataclass
class Hello:
    salt: str
    digest: str
    digest_cert: str = ""


@dataclass
class Join:
    node: str
    connection_id: str
    salt: str
    digest: str


@dataclass
class Version:
    name: str = "ergo_py"
    release: str = __version__
    commit: str = ""
    license: str = "MIT"


@dataclass
class Introduce:
    node: str
    version: Version
    flags: int
    creation: int
    max_message_size: int
    atom_cache: dict[int, str] = field(default_factory=dict)
    reg_cache: dict[int, str] = field(default_factory=dict)
    err_cache: dict[int, Any] = field(default_factory=dict)
    digest: str = ""


@dataclass
class Accept:
    id: str = ""
    pool_size: int = 0
    pool_dsn: list[str] = field(default_factory=list)
    digest: str = ""
    digest_cert: str = ""


def _reg(cls: type, name: str, *fields: tuple[str, Any]) -> None:
    edf.register_protocol(edf.StructType(name, cls, fields), cls)


_reg(Hello, _EHS + "MessageHello", ("salt", "string"), ("digest", "string"),
     ("digest_cert", "string"))  # fmt: skip
_reg(Join, _EHS + "MessageJoin", ("node", "atom"), ("connection_id", "string"),
     ("salt", "string"), ("digest", "string"))  # fmt: skip
_reg(Version, _GEN + "Version", ("name", "string"), ("release", "string"),
     ("commit", "string"), ("license", "string"))  # fmt: skip
edf.register_protocol(
    edf.StructType(
        _GEN + "NetworkFlags",
        int,
        (),
        raw=lambda flags: struct.pack(">Q", flags),
        unraw=lambda data: struct.unpack(">Q", data[:8])[0] if len(data) >= 8 else 0,
    )
)
_reg(Introduce, _EHS + "MessageIntroduce", ("node", "atom"), ("version", ("reg", _GEN + "Version")),
     ("flags", ("reg", _GEN + "NetworkFlags")), ("creation", "int64"),
     ("max_message_size", "int"), ("atom_cache", ("map", "uint16", "atom")),
     ("reg_cache", ("map", "uint16", "string")), ("err_cache", ("map", "uint16", "error")),
     ("digest", "string"))  # fmt: skip
_reg(Accept, _EHS + "MessageAccept", ("id", "string"), ("pool_size", "int"),
     ("pool_dsn", ("slice", "string")), ("digest", "string"),
     ("digest_cert", "string"))  # fmt: skip


def _sha(*parts: str, tail: bytes = b"") -> str:
    return hashlib.sha256(":".join(parts).encode() + tail).hexdigest()


def _salt(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def pack(message: Any) -> bytes:
    """One handshake message on the wire."""
    body = edf.encode(message)
    return _HEADER.pack(MAGIC, VERSION, len(body)) + body


@dataclass(frozen=True)
class Established:
    """The handshake is done: who the peer is and what it said about the connection."""

    peer: str
    creation: int
    connection_id: str
    pool_size: int
    pool_dsn: tuple[str, ...]
    flags: int
    max_message_size: int
    caches: edf.Caches
    peer_version: str


@dataclass(frozen=True)
class Joined:
    """A pool link joined connection ``connection_id`` of ``peer``."""

    peer: str
    connection_id: str


def _caches(intro: Introduce) -> edf.Caches:
    return edf.Caches(
        atoms={int(k): str(v) for k, v in intro.atom_cache.items()},
        types={int(k): str(v) for k, v in intro.reg_cache.items()},
        errors={int(k): edf.error_text(v) for k, v in intro.err_cache.items()},
    )


@dataclass(frozen=True)
class Local:
    """Who we are in a handshake: name, incarnation, cookie, the largest packet we take
    (0: no limit) and the network flags we offer."""

    node_name: str
    creation: int
    cookie: str
    max_message_size: int = 0
    flags: int = FLAGS_ENABLE


def _introduce(local: Local) -> Introduce:
    """Ours: no atom or type numbers; the errors we send by number (``edf.ERROR_IDS``)."""
    errors = {ident: text for text, ident in edf.ERROR_IDS.items()}
    flags = local.flags | FLAGS_ENABLE
    return Introduce(
        local.node_name, Version(), flags, local.creation, local.max_message_size, err_cache=errors
    )


def _established(intro: Introduce, accept: Accept) -> Established:
    return Established(
        peer=str(intro.node),
        creation=intro.creation,
        connection_id=accept.id,
        pool_size=accept.pool_size,
        pool_dsn=tuple(accept.pool_dsn),
        flags=intro.flags,
        max_message_size=intro.max_message_size,
        caches=_caches(intro),
        peer_version=f"{intro.version.name} {intro.version.release}",
    )


class _Machine:
    """Message framing and the byte buffers shared by the three machines."""

    def __init__(self, cookie: str, max_message: int = MAX_MESSAGE) -> None:
        self._cookie = cookie
        self._max = min(max_message, MAX_MESSAGE)
        self._in = bytearray()
        self._out = bytearray()
        self.result: Established | Joined | None = None
        self.trailing = b""

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def _send(self, message: Any) -> None:
        self._out += pack(message)

    def receive_data(self, data: bytes) -> Established | Joined | None:
        """Feed bytes; the result once the handshake is done (None: more to come)."""
        if self.result is not None:
            self.trailing += data
            return self.result
        self._in += data
        while self.result is None and len(self._in) >= _HEADER.size:
            magic, version, length = _HEADER.unpack_from(self._in)
            if magic != MAGIC:
                raise RemoteProtocolError(f"not an Ergo handshake ({COOKIE_HINT})")
            if version != VERSION:
                raise RemoteProtocolError(f"Ergo handshake version {version}, not {VERSION}")
            if length > self._max:
                raise RemoteProtocolError(
                    f"handshake message of {length} bytes (limit {self._max})"
                )
            if len(self._in) < _HEADER.size + length:
                break
            body = bytes(self._in[_HEADER.size : _HEADER.size + length])
            del self._in[: _HEADER.size + length]
            message, used = edf.decode(body)
            if used != len(body):
                raise RemoteProtocolError("trailing bytes in a handshake message")
            self._step(message)
        if self.result is not None:
            self.trailing, self._in = bytes(self._in), bytearray()
        return self.result

    def _step(self, message: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def _expect(message: Any, cls: type) -> Any:
        if not isinstance(message, cls):
            raise RemoteProtocolError(
                f"Ergo handshake: expected {cls.__name__}, got {type(message).__name__}"
            )
        return message


class DialerMachine(_Machine):
    """Our side of a dial; ``peer_cert_sha1``: SHA-1 of the TLS server's leaf (None: plain)."""

    def __init__(
        self, local: Local, *, peer_name: str | None = None, peer_cert_sha1: bytes | None = None
    ) -> None:
        super().__init__(local.cookie)
        self._intro = _introduce(local)
        self._peer_name = peer_name
        self._peer_fp = peer_cert_sha1
        self._hello = Hello(_salt(64), "")
        self._hello.digest = _sha(self._hello.salt, local.cookie)
        self._accept: Accept | None = None
        self._stage = "hello"

    def initiate(self) -> bytes:
        self._send(self._hello)
        return self.data_to_send()

    def _step(self, message: Any) -> None:
        cookie = self._cookie
        if self._stage == "hello":
            hello = self._expect(message, Hello)
            if hello.digest != _sha(hello.salt, self._hello.digest, cookie):
                raise HandshakeRejected(f"incorrect digest from the Ergo acceptor: {COOKIE_HINT}")
            if self._peer_fp is not None:
                want = _sha(hello.salt, self._hello.salt, cookie, tail=self._peer_fp)
                if hello.digest_cert != want:
                    raise HandshakeRejected(
                        "incorrect certificate digest: the acceptor's cookie proof does not "
                        "name the certificate it served us (a relay in between?)"
                    )
            self._intro.digest = _sha(hello.salt, cookie)
            self._send(self._intro)
            self._stage = "accept"
        elif self._stage == "accept":
            self._accept = self._expect(message, Accept)
            self._stage = "introduce"
        else:
            intro = self._expect(message, Introduce)
            if intro.node == self._intro.node:
                raise HandshakeRejected(f"the peer introduced itself with our name {intro.node}")
            if self._peer_name is not None and intro.node != self._peer_name:
                raise HandshakeRejected(
                    f"dialed {self._peer_name} but the peer introduced itself as {intro.node}"
                )
            self._send(Accept())
            assert self._accept is not None
            self.result = _established(intro, self._accept)


class AcceptorMachine(_Machine):
    """Our acceptor's side. ``admit(peer, creation)`` returns why not (None: welcome)."""

    def __init__(
        self,
        local: Local,
        *,
        pool_size: int,
        pool_dsn: tuple[str, ...],
        local_cert_sha1: bytes | None,
        admit: Callable[[str, int], str | None],
        join: Callable[[str, str], str | None] | None = None,
        max_handshake_size: int = MAX_MESSAGE,
    ) -> None:
        super().__init__(local.cookie, max_handshake_size)
        self._name = local.node_name
        self._intro = _introduce(local)
        self._pool = (pool_size, list(pool_dsn))
        self._fp = local_cert_sha1
        self._admit = admit
        self._join = join
        self._salt = ""
        self._accept: Accept | None = None
        self._peer: Introduce | None = None
        self._stage = "hello"

    def _step(self, message: Any) -> None:
        cookie = self._cookie
        if self._stage == "hello":
            if isinstance(message, Join):
                self._joined(message)
                return
            hello = self._expect(message, Hello)
            if hello.digest != _sha(hello.salt, cookie):
                raise HandshakeRejected(f"incorrect digest from the Ergo dialer: {COOKIE_HINT}")
            self._salt = _salt(64)
            reply = Hello(self._salt, _sha(self._salt, hello.digest, cookie))
            if self._fp is not None:
                reply.digest_cert = _sha(self._salt, hello.salt, cookie, tail=self._fp)
            self._send(reply)
            self._stage = "introduce"
        elif self._stage == "introduce":
            intro = self._expect(message, Introduce)
            if intro.node == self._name:
                raise HandshakeRejected(f"the peer introduced itself with our name {intro.node}")
            if intro.digest != _sha(self._salt, cookie):
                raise HandshakeRejected(f"incorrect introduce digest: {COOKIE_HINT}")
            if not intro.creation:
                raise RemoteProtocolError("the peer's creation is 0")
            why = self._admit(str(intro.node), intro.creation)
            if why is not None:
                raise HandshakeRejected(why)
            self._peer = intro
            self._accept = Accept(_salt(32), self._pool[0], self._pool[1])
            self._send(self._accept)
            self._send(self._intro)
            self._stage = "accept"
        else:
            self._expect(message, Accept)
            assert self._peer is not None and self._accept is not None
            self.result = _established(self._peer, self._accept)

    def _joined(self, join: Join) -> None:
        cookie = self._cookie
        if join.digest != _sha(join.connection_id, join.salt, cookie):
            raise HandshakeRejected(f"incorrect join digest: {COOKIE_HINT}")
        why = "this acceptor takes no pool links" if self._join is None else None
        if self._join is not None:
            why = self._join(str(join.node), join.connection_id)
        if why is not None:
            raise HandshakeRejected(why)
        accept = Accept(digest=_sha(join.digest, cookie))
        if self._fp is not None:
            accept.digest_cert = _sha(join.digest, join.salt, cookie, tail=self._fp)
        self._send(accept)
        self.result = Joined(str(join.node), join.connection_id)


class JoinMachine(_Machine):
    """A further link of a connection we dialled (Ergo's pool): ``to`` names its peer and id."""

    def __init__(self, local: Local, to: Joined, *, peer_cert_sha1: bytes | None = None) -> None:
        super().__init__(local.cookie)
        salt, cid = _salt(64), to.connection_id
        self._join = Join(local.node_name, cid, salt, _sha(cid, salt, local.cookie))
        self._peer = to.peer
        self._peer_fp = peer_cert_sha1

    def initiate(self) -> bytes:
        self._send(self._join)
        return self.data_to_send()

    def _step(self, message: Any) -> None:
        accept = self._expect(message, Accept)
        cookie = self._cookie
        if accept.digest != _sha(self._join.digest, cookie):
            raise HandshakeRejected(f"incorrect join digest from the Ergo acceptor: {COOKIE_HINT}")
        if self._peer_fp is not None:
            want = _sha(self._join.digest, self._join.salt, cookie, tail=self._peer_fp)
            if accept.digest_cert != want:
                raise HandshakeRejected("incorrect certificate digest on a pool link")
        self.result = Joined(self._peer, self._join.connection_id)
