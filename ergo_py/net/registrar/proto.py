"""The embedded registrar's wire format, sans-IO: messages in, bytes out, and back.

Our own protocol in the spirit of Ergo's "ESRD R1" (not byte compatible with
Go). A frame is ``[version: u8][type: u8][length: u32 BE][msgpack body]``; the
body is a msgpack array holding the message's fields in order. Nothing here
touches a socket: :func:`encode` turns a message into one frame and
:class:`MessageDecoder` turns a byte stream into messages. Anything malformed
raises ``gen.RemoteProtocolError``; a frame over the size limit is refused at
the sender with ``gen.ErrTooLarge`` and at the receiver (as soon as its header
arrives) with ``gen.RemoteProtocolError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final, Self

import msgpack

from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoRoute,
    ErrTaken,
    ErrTooLarge,
    ErrUnsupported,
    RemoteProtocolError,
)
from ergo_py.gen.options import MAX_NODE_NAME_BYTES
from ergo_py.gen.registrar import Route

PROTOCOL_VERSION: Final = 1
HEADER: Final = struct.Struct(">BBI")
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024
MAX_ROUTES: Final = 64

# Error codes carried in replies, and the exception each stands for. The table
# is closed: a reply with any other code is a protocol error.
ERROR_TAKEN: Final = "taken"
ERROR_INCORRECT: Final = "incorrect"
ERROR_NO_ROUTE: Final = "no_route"
ERROR_UNSUPPORTED: Final = "unsupported"
_ERROR_CLASSES: Final[dict[str, type[ErgoError]]] = {
    ERROR_TAKEN: ErrTaken,
    ERROR_INCORRECT: ErrIncorrect,
    ERROR_NO_ROUTE: ErrNoRoute,
    ERROR_UNSUPPORTED: ErrUnsupported,
}


def error_for(code: str, node: str = "") -> ErgoError:
    """The exception a reply's error ``code`` stands for (``node`` goes in its text)."""
    cls = _ERROR_CLASSES.get(code)
    if cls is None:
        return RemoteProtocolError(f"registrar: unknown error code {code!r}")
    subject = f" for {node!r}" if node else ""
    return cls(f"registrar: {code}{subject}")


def _check_error_code(code: object) -> str | None:
    if code is None:
        return None
    if not isinstance(code, str) or code not in _ERROR_CLASSES:
        raise ErrIncorrect(f"unknown registrar error code {code!r}")
    return code


def _check_node(node: object) -> str:
    if not isinstance(node, str) or not node:
        raise ErrIncorrect(f"node name must be a non-empty str, got {node!r}")
    if len(node.encode("utf-8", "surrogatepass")) > MAX_NODE_NAME_BYTES:
        raise ErrIncorrect(f"node name longer than {MAX_NODE_NAME_BYTES} bytes")
    return node


def valid_node_name(name: str) -> bool:
    """Whether ``name`` is ``node@host`` with both parts, as the registrar accepts it."""
    node, sep, host = name.partition("@")
    return bool(sep and node and host and "@" not in host)


def _route_to_wire(route: Route) -> list[Any]:
    return [route.host, route.port, route.tls, route.handshake_version, route.proto_version]


def _route_from_wire(raw: object) -> Route:
    if not isinstance(raw, list) or len(raw) != 5:
        raise ErrIncorrect("a route is an array of 5 fields")
    return Route(*raw)


def _check_routes(routes: object) -> tuple[Route, ...]:
    if not isinstance(routes, tuple) or not all(isinstance(r, Route) for r in routes):
        raise ErrIncorrect("routes must be a tuple of Route")
    if len(routes) > MAX_ROUTES:
        raise ErrIncorrect(f"more than {MAX_ROUTES} routes")
    return routes


def _routes_from_wire(raw: object) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise ErrIncorrect("routes must be an array")
    if len(raw) > MAX_ROUTES:
        raise ErrIncorrect(f"more than {MAX_ROUTES} routes")
    return tuple(_route_from_wire(r) for r in raw)


def _same(value: Any) -> Any:
    return value


def _routes_to_wire(routes: tuple[Route, ...]) -> list[Any]:
    return [_route_to_wire(r) for r in routes]


@dataclass(frozen=True, slots=True)
class _Wire:
    """How one field of a message is checked, and how it goes onto the wire and back."""

    check: Callable[[Any], object]
    out: Callable[[Any], Any] = _same
    back: Callable[[Any], Any] = _same


def _wire(how: _Wire, **kw: Any) -> Any:
    """A message field that travels ``how``."""
    return field(metadata={"wire": how}, **kw)


_NODE = _Wire(_check_node)
_ERROR = _Wire(_check_error_code)
_ROUTES = _Wire(_check_routes, _routes_to_wire, _routes_from_wire)


class Message:
    """Base of the registrar's messages; ``TYPE`` is the frame's type byte.

    A message is a dataclass whose fields each say how they travel
    (``_wire``); the body is their wire forms in the order declared.
    """

    __slots__ = ()
    TYPE: ClassVar[int]

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            f.metadata["wire"].check(getattr(self, f.name))

    def _fields(self) -> list[Any]:
        return [f.metadata["wire"].out(getattr(self, f.name)) for f in fields(self)]  # type: ignore[arg-type]

    @classmethod
    def _from_fields(cls, raw: list[Any]) -> Self:
        declared = fields(cls)  # type: ignore[arg-type]
        if len(raw) != len(declared):
            raise ErrIncorrect(f"{cls.__name__} has {len(declared)} fields, got {len(raw)}")
        return cls(*(f.metadata["wire"].back(v) for f, v in zip(declared, raw, strict=True)))


@dataclass(frozen=True, slots=True)
class Register(Message):
    """Client → server: register ``node`` reachable at ``routes``.

    Sent as the first frame of a connection that then stays open as the
    registration's lease.
    """

    TYPE: ClassVar[int] = 44
    node: str = _wire(_NODE)
    routes: tuple[Route, ...] = _wire(_ROUTES)


@dataclass(frozen=True, slots=True)
class RegisterReply(Message):
    """Server → client: ``error`` is None on success, else an error code."""

    TYPE: ClassVar[int] = 45
    error: str | None = _wire(_ERROR, default=None)


@dataclass(frozen=True, slots=True)
class Unregister(Message):
    """Client → server: drop the registration of ``node`` made on this connection.

    The server closes the connection afterwards; it sends no reply.
    """

    TYPE: ClassVar[int] = 48
    node: str = _wire(_NODE)


@dataclass(frozen=True, slots=True)
class Resolve(Message):
    """Client → server: where does ``node`` accept connections?"""

    TYPE: ClassVar[int] = 46
    node: str = _wire(_NODE)


@dataclass(frozen=True, slots=True)
class ResolveReply(Message):
    """Server → client: the node's routes, or an error code (then no routes)."""

    TYPE: ClassVar[int] = 47
    routes: tuple[Route, ...] = _wire(_ROUTES, default=())
    error: str | None = _wire(_ERROR, default=None)

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        if self.error is not None and self.routes:
            raise ErrIncorrect("a ResolveReply carries routes or an error, not both")


_MESSAGE_TYPES: Final[dict[int, type[Message]]] = {
    cls.TYPE: cls for cls in (Register, RegisterReply, Unregister, Resolve, ResolveReply)
}


def encode(message: Message, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """One complete frame for ``message``.

    Raises ``gen.ErrTooLarge`` if the body exceeds ``max_frame_size``.
    """
    body: bytes = msgpack.packb(message._fields(), use_bin_type=True)
    if len(body) > max_frame_size:
        raise ErrTooLarge(f"registrar frame of {len(body)} bytes exceeds {max_frame_size}")
    return HEADER.pack(PROTOCOL_VERSION, message.TYPE, len(body)) + body


def decode_body(type_code: int, body: bytes) -> Message:
    """The message a frame's type byte and body stand for.

    Raises ``gen.RemoteProtocolError`` for an unknown type or a malformed body.
    """
    cls = _MESSAGE_TYPES.get(type_code)
    if cls is None:
        raise RemoteProtocolError(f"registrar: unknown message type {type_code}")
    try:
        fields = msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True, max_bin_len=0, max_ext_len=0
        )
    except Exception as exc:  # msgpack raises many unrelated types for bad input
        raise RemoteProtocolError(f"registrar: undecodable {cls.__name__} body: {exc}") from exc
    if not isinstance(fields, list):
        raise RemoteProtocolError(f"registrar: {cls.__name__} body is not an array")
    try:
        return cls._from_fields(fields)
    except (ErrIncorrect, TypeError) as exc:
        raise RemoteProtocolError(f"registrar: malformed {cls.__name__}: {exc}") from exc


class MessageDecoder:
    """Turns a byte stream into registrar messages, one frame at a time.

    (Not to be confused with ``net.frames.FrameDecoder``, the node links' one.)

    Feed bytes with :meth:`receive_data`; take messages with
    :meth:`next_message` until it returns None. After it has raised
    ``gen.RemoteProtocolError`` the stream cannot be resynchronised: every
    later call raises the same error, and the caller should close the
    connection.
    """

    __slots__ = ("_buffer", "_error", "_max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame (0: between frames)."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        if self._error is not None:
            raise self._error
        self._buffer += data

    def next_message(self) -> Message | None:
        """The next complete message, or None if more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def _next(self) -> Message | None:
        if len(self._buffer) < HEADER.size:
            return None
        version, type_code, length = HEADER.unpack_from(self._buffer)
        if version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"registrar: unsupported protocol version {version}")
        if type_code not in _MESSAGE_TYPES:
            raise RemoteProtocolError(f"registrar: unknown message type {type_code}")
        if length > self._max_frame_size:
            raise RemoteProtocolError(
                f"registrar: frame of {length} bytes exceeds {self._max_frame_size}"
            )
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return decode_body(type_code, body)


def one_message(data: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Message:
    """The single message a datagram must hold (``gen.RemoteProtocolError`` otherwise)."""
    decoder = MessageDecoder(max_frame_size)
    decoder.receive_data(data)
    message = decoder.next_message()
    if message is None or decoder.buffered:
        raise RemoteProtocolError("a datagram must hold exactly one whole message")
    return message
