"""ENP, Ergo's network protocol (rev. 1): packets after the handshake (sans-IO).

A packet is ``78, 1, u32 total length, order, type`` and a type-specific
body; process ids travel as their 64-bit number only (the node and creation
are the link's). The *order* byte picks the peer's receive queue: packets
with the same non-zero order are handled in the order sent, order 0 may be
handled in any order. So every packet we send carries a non-zero order
derived from the sending process (:func:`order_of`), and a sender's stream
stays in order on the Go side too.

:class:`PacketReader` cuts a byte stream into packets; :class:`Codec`
turns a packet into an event (the dataclasses below) and events of ours
into packets, with the EDF caches the peer announced.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from ergo_py.gen import errors as ge
from ergo_py.gen.errors import RemoteProtocolError
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.net.ergo import edf

MAGIC, VERSION = 78, 1
HEADER = 8
_HEAD = struct.Struct(">BBIBB")
_Q = struct.Struct(">Q")
_QQ = struct.Struct(">QQ")
_QQQ = struct.Struct(">QQQ")
_Q4 = struct.Struct(">QQQQ")

# Packet types (net/proto/types.go).
SEND_PID, SEND_NAME, SEND_NAME_CACHE, SEND_ALIAS = 101, 102, 103, 104
SEND_EVENT, SEND_EVENT_CACHE, SEND_EXIT = 105, 106, 107
REQUEST_PID, REQUEST_NAME, REQUEST_NAME_CACHE, REQUEST_ALIAS = 121, 122, 123, 124
RESPONSE, RESPONSE_ERROR = 129, 130
TERMINATE_PID, TERMINATE_NAME, TERMINATE_NAME_CACHE, TERMINATE_ALIAS = 181, 182, 183, 184
TERMINATE_EVENT, TERMINATE_EVENT_CACHE = 185, 186
ANY, COMPRESSED = 199, 200
# Both message families number their four types in the same order of how the
# recipient is addressed: by PID, by name, by cached name, by alias.
_BY_PID, _BY_NAME, _BY_CACHED_NAME, _BY_ALIAS = range(4)
_SEND_TYPES = range(SEND_PID, SEND_ALIAS + 1)
_REQUEST_TYPES = range(REQUEST_PID, REQUEST_ALIAS + 1)
_ZIP = {100: "lzw", 101: "zlib", 102: "gzip"}  # gen.CompressionType ids

# Response errors with a code of their own (the rest travel as EDF errors).
_RESPONSE_CODES: dict[int, type[ge.ErgoError] | str] = {
    1: ge.ErrProcessUnknown,
    2: "mailbox",
    3: ge.ErrProcessTerminated,
}

_PROTO = "#ergo.services/ergo/net/proto/"


def order_of(pid_id: int) -> int:
    """The order byte for a sender: never 0 (which would let the peer reorder)."""
    return pid_id % 255 or 255


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """A message from ``from_`` to local ``to`` (PID, ProcessID or Alias)."""

    from_: PID
    to: PID | ProcessID | Alias
    message: Any


@dataclass(frozen=True)
class Request:
    """A call from ``from_`` to local ``to``; the answer goes back with ``ref``."""

    from_: PID
    to: PID | ProcessID | Alias
    ref: Ref
    message: Any


@dataclass(frozen=True)
class Response:
    """The answer to our call ``ref``: ``value``, or ``error`` when it failed."""

    from_: PID
    to: PID
    ref: Ref
    value: Any
    error: BaseException | None


@dataclass(frozen=True)
class ExitSignal:
    """``from_`` sends an exit signal to local ``to`` (Go's ``SendExit``)."""

    from_: PID
    to: PID
    reason: Any


@dataclass(frozen=True)
class Terminated:
    """A process of the peer, that our processes link or monitor, ended."""

    target: PID | ProcessID | Alias
    reason: Any


@dataclass(frozen=True)
class Control:
    """A link/monitor request or a result (``protoMessageAny``): one of the structs below."""

    message: Any


@dataclass(frozen=True)
class Unsupported:
    """A packet of a feature we do not take (events, LZW); what it was."""

    what: str


Event = Send | Request | Response | ExitSignal | Terminated | Control | Unsupported


# The structs a link or monitor request travels as (protoMessageAny), and the result.
@dataclass(frozen=True)
class LinkRequest:
    kind: str  # "Link", "Unlink", "Monitor", "Demonitor"
    source: PID
    target: PID | ProcessID | Alias
    ref: Ref


@dataclass(frozen=True)
class Result:
    error: Any
    result: Any
    ref: Ref


_TARGET_SPEC = {
    PID: ("PID", "pid"),
    ProcessID: ("ProcessID", "processid"),
    Alias: ("Alias", "alias"),
}


def _register() -> None:
    for kind in ("Link", "Unlink", "Monitor", "Demonitor"):
        for suffix, spec in _TARGET_SPEC.values():

            def make(source: PID, target: Any, ref: Ref, _kind: str = kind) -> LinkRequest:
                return LinkRequest(_kind, source, target, ref)

            name = f"{_PROTO}Message{kind}{suffix}"
            fields = (("source", "pid"), ("target", spec), ("ref", "ref"))
            edf.register_protocol(edf.StructType(name, make, fields))
    edf.register_protocol(
        edf.StructType(
            _PROTO + "MessageResult",
            Result,
            (("error", "error"), ("result", "any"), ("ref", "ref")),
        ),
        Result,
    )


_register()
edf.register_protocol_class(
    LinkRequest, lambda r: edf.struct_type(link_request_name(r.kind, r.target))
)


def link_request_name(kind: str, target: Any) -> str:
    return f"{_PROTO}Message{kind}{_TARGET_SPEC[type(target)][0]}"


# --- framing --------------------------------------------------------------------------


class PacketReader:
    """Cuts a byte stream into whole packets (each a ``bytes``, header included)."""

    def __init__(self, max_size: int) -> None:
        self._buf = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= HEADER:
            magic, version, length = buf[pos], buf[pos + 1], _U32(buf, pos + 2)
            if magic != MAGIC or version != VERSION:
                raise RemoteProtocolError(f"not an ENP packet (magic {magic}, version {version})")
            if length < HEADER:
                raise RemoteProtocolError(f"ENP packet length {length}")
            if self._max and length > self._max:
                raise ge.ErrTooLarge(f"ENP packet of {length} bytes (limit {self._max})")
            if len(buf) - pos < length:
                break
            out.append(bytes(buf[pos : pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return out


def _U32(buf: bytearray, pos: int) -> int:
    return int.from_bytes(buf[pos : pos + 4], "big")


# --- the codec ------------------------------------------------------------------------


class Codec:
    """Packets of one connection: ``local``/``peer`` name and creation, the peer's caches."""

    def __init__(
        self,
        local: str,
        local_creation: int,
        peer: str,
        peer_creation: int,
        caches: edf.Caches,
        max_size: int = 0,
    ) -> None:
        self.max_size = max_size  # of an unpacked compressed packet (0: no limit)
        self.local = Atom(local)
        self.local_creation = local_creation
        self.peer = Atom(peer)
        self.peer_creation = peer_creation
        self.caches = caches

    # decoding

    def _pid(self, ident: int) -> PID:
        return PID(self.peer, ident, self.peer_creation)

    def _local(self, ident: int) -> PID:
        return PID(self.local, ident, self.local_creation)

    def _alias(self, packet: bytes, pos: int) -> Alias:
        return Alias(self.local, edf.words_ref(*_QQQ.unpack_from(packet, pos)), self.local_creation)

    def _edf(self, packet: bytes, pos: int) -> Any:
        value, used = edf.decode(memoryview(packet)[pos:], self.caches)
        if pos + used != len(packet):
            raise RemoteProtocolError(f"{len(packet) - pos - used} extra bytes after a message")
        return value

    def _name(self, packet: bytes, pos: int, cached: bool) -> tuple[Atom, int]:
        if cached:
            (ident,) = struct.unpack_from(">H", packet, pos)
            name = self.caches.atoms.get(ident)
            if name is None:
                raise RemoteProtocolError(f"unknown atom cache id {ident}")
            return Atom(name), pos + 2
        n = packet[pos]
        return Atom(packet[pos + 1 : pos + 1 + n].decode()), pos + 1 + n

    def _recipient(self, p: bytes, pos: int, by: int) -> tuple[PID | ProcessID | Alias, int]:
        """A local recipient at ``pos``, addressed ``by`` (``_BY_*``), and where it ends."""
        if by == _BY_PID:
            return self._local(_Q.unpack_from(p, pos)[0]), pos + 8
        if by == _BY_ALIAS:
            return self._alias(p, pos), pos + 24
        name, end = self._name(p, pos, by == _BY_CACHED_NAME)
        return ProcessID(name, self.local), end

    def decode(self, packet: bytes) -> Event:
        """One packet (from :class:`PacketReader`) as an event."""
        try:
            return self._decode(packet)
        except (IndexError, struct.error, UnicodeDecodeError) as exc:
            raise RemoteProtocolError(f"malformed ENP packet type {packet[7]}: {exc}") from exc

    def _decode(self, p: bytes) -> Event:
        kind = p[7]
        if kind in _SEND_TYPES:
            from_ = self._pid(_Q.unpack_from(p, 8)[0])
            to, pos = self._recipient(p, 25, kind - SEND_PID)
            return Send(from_, to, self._edf(p, pos))
        if kind in _REQUEST_TYPES:
            from_ = self._pid(_Q.unpack_from(p, 8)[0])
            ref = Ref(self.peer, edf.words_ref(*_QQQ.unpack_from(p, 17)), self.peer_creation)
            to, pos = self._recipient(p, 41, kind - REQUEST_PID)
            return Request(from_, to, ref, self._edf(p, pos))
        if kind in (RESPONSE, RESPONSE_ERROR):
            from_ = self._pid(_Q.unpack_from(p, 8)[0])
            to_pid = self._local(_Q.unpack_from(p, 17)[0])
            ref = Ref(self.local, edf.words_ref(*_QQQ.unpack_from(p, 25)), self.local_creation)
            if kind == RESPONSE:
                return Response(from_, to_pid, ref, self._edf(p, 49), None)
            return Response(from_, to_pid, ref, None, self._response_error(p))
        if kind == SEND_EXIT:
            from_ = self._pid(_Q.unpack_from(p, 8)[0])
            return ExitSignal(from_, self._local(_Q.unpack_from(p, 17)[0]), self._edf(p, 25))
        if kind in (TERMINATE_PID, TERMINATE_ALIAS, TERMINATE_NAME, TERMINATE_NAME_CACHE):
            target: PID | ProcessID | Alias
            if kind == TERMINATE_PID:
                target, pos = self._pid(_Q.unpack_from(p, 9)[0]), 17
            elif kind == TERMINATE_ALIAS:
                ident = edf.words_ref(*_QQQ.unpack_from(p, 9))
                target, pos = Alias(self.peer, ident, self.peer_creation), 33
            else:
                name, pos = self._name(p, 9, kind == TERMINATE_NAME_CACHE)
                target = ProcessID(name, self.peer)
            return Terminated(target, self._edf(p, pos))
        if kind == ANY:
            return Control(self._edf(p, 8))
        if kind == COMPRESSED:
            return self._decode(self._inflate(p))
        if kind in (SEND_EVENT, SEND_EVENT_CACHE, TERMINATE_EVENT, TERMINATE_EVENT_CACHE):
            return Unsupported("events (gen.Event) are not supported across the ergo dialect")
        raise RemoteProtocolError(f"unknown ENP packet type {kind}")

    def _response_error(self, p: bytes) -> BaseException | None:
        code = p[49]
        if code == 0:
            return None
        if code == 255:
            err = self._edf(p, 50)
            return err if isinstance(err, BaseException) else edf.RemoteError(str(err))
        cls = _RESPONSE_CODES.get(code)
        if cls is None:
            raise RemoteProtocolError(f"unknown response error code {code}")
        if not isinstance(cls, type):
            return edf.RemoteError("process mailbox is full")
        return cls(edf.error_text(cls))

    def _inflate(self, p: bytes) -> bytes:
        """A compressed packet: ``u32`` size, then the whole original packet compressed."""
        how = _ZIP.get(p[8])
        if how not in ("gzip", "zlib"):
            raise RemoteProtocolError(f"compression {how or p[8]} is not supported")
        # Unpacked no further than the limit, so a small bomb cannot take the memory.
        limit = self.max_size or (1 << 62)
        unpack = zlib.decompressobj(wbits=31 if how == "gzip" else 15)
        try:
            inner = unpack.decompress(p[13:], limit)
            if unpack.unconsumed_tail:
                raise ge.ErrTooLarge(f"a compressed ENP packet unpacks beyond {limit} bytes")
            if not unpack.eof:
                raise RemoteProtocolError("bad compressed packet: truncated")
        except zlib.error as exc:
            raise RemoteProtocolError(f"bad compressed packet: {exc}") from exc
        if len(inner) < HEADER or inner[7] == COMPRESSED:
            raise RemoteProtocolError("a compressed packet holds no packet")
        return inner

    # encoding

    @staticmethod
    def _packet(order: int, kind: int, head: bytes, message: Any, as_: str | None = "any") -> bytes:
        """A packet; ``message`` follows the head as a tagged value (an ``error`` for ``as_``)."""
        body = bytearray(HEADER)
        body += head
        if as_ == "any":
            edf.encode_any(body, message)
        elif as_ == "error":
            body.append(edf.T_ERROR)
            edf.encode_value(body, "error", message if message is not None else _NORMAL)
        _HEAD.pack_into(body, 0, MAGIC, VERSION, len(body), order, kind)
        return bytes(body)

    def send(self, from_pid: PID, to: PID | ProcessID | Alias, message: Any) -> bytes:
        order = order_of(from_pid.id)
        head = _Q.pack(from_pid.id) + bytes(9)  # priority 0, no "important" ref
        if type(to) is PID:
            return self._packet(order, SEND_PID, head + _Q.pack(to.id), message)
        if type(to) is Alias:
            return self._packet(order, SEND_ALIAS, head + _QQQ.pack(*edf.ref_words(to.id)), message)
        assert isinstance(to, ProcessID)
        return self._packet(order, SEND_NAME, head + _short_name(to.name), message)

    def request(self, from_pid: PID, to: PID | ProcessID | Alias, ref: Ref, message: Any) -> bytes:
        order = order_of(from_pid.id)
        head = _Q.pack(from_pid.id) + b"\x00" + _QQQ.pack(*edf.ref_words(ref.id))
        if type(to) is PID:
            return self._packet(order, REQUEST_PID, head + _Q.pack(to.id), message)
        if type(to) is Alias:
            words = _QQQ.pack(*edf.ref_words(to.id))
            return self._packet(order, REQUEST_ALIAS, head + words, message)
        assert isinstance(to, ProcessID)
        return self._packet(order, REQUEST_NAME, head + _short_name(to.name), message)

    def response(
        self, from_pid: PID, to: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> bytes:
        order = order_of(from_pid.id)
        head = _Q.pack(from_pid.id) + b"\x00" + _Q4.pack(to.id, *edf.ref_words(ref.id))
        if error is None:
            return self._packet(order, RESPONSE, head, value)
        for code, cls in _RESPONSE_CODES.items():
            if isinstance(cls, type) and isinstance(error, cls):
                return self._packet(order, RESPONSE_ERROR, head + bytes([code]), None, as_=None)
        return self._packet(order, RESPONSE_ERROR, head + b"\xff", error, as_="error")

    def exit(self, from_pid: PID, to: PID, reason: Any) -> bytes:
        head = _Q.pack(from_pid.id) + b"\x02" + _Q.pack(to.id)
        return self._packet(order_of(from_pid.id), SEND_EXIT, head, reason, as_="error")

    def terminated(self, target: PID | ProcessID | Alias, reason: Any, order: int) -> bytes:
        """Our process ``target``, that the peer's processes link or monitor, ended."""
        if type(target) is PID:
            return self._packet(
                order, TERMINATE_PID, b"\x01" + _Q.pack(target.id), reason, as_="error"
            )
        if type(target) is Alias:
            head = b"\x01" + _QQQ.pack(*edf.ref_words(target.id))
            return self._packet(order, TERMINATE_ALIAS, head, reason, as_="error")
        assert isinstance(target, ProcessID)
        head = b"\x01" + _short_name(target.name)
        return self._packet(order, TERMINATE_NAME, head, reason, as_="error")

    def control(self, message: Any, order: int) -> bytes:
        return self._packet(order, ANY, b"", message)


def _short_name(name: str) -> bytes:
    data = name.encode()
    if len(data) > 255:
        raise ge.ErrTooLarge(f"process name longer than 255 bytes: {name[:32]!r}...")
    return bytes([len(data)]) + data


_NORMAL = Atom("normal")
