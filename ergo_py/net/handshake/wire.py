"""The handshake's wire format: framing, message bodies, digests, the connection id.

One place for every byte-level rule, so the three machines cannot drift
apart: a message is ``[87][2][uint32 BE body length][body]`` with a msgpack
array ``[type, fields...]`` as body, and every digest is HMAC-SHA256 keyed by
the cookie over a labelled msgpack list of its inputs. Readers raise
``gen.RemoteProtocolError`` for anything malformed (``gen.ErrTooLarge`` for
an oversized message, from its header alone); the ``check_*`` helpers raise
``gen.ErrIncorrect`` for a local setting that cannot cross the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import Any

import msgpack

from ergo_py.gen.errors import ErrIncorrect, ErrTooLarge, RemoteProtocolError
from ergo_py.gen.options import MAX_NODE_NAME_BYTES
from ergo_py.net.handshake.types import (
    DIGEST_SIZE,
    FINGERPRINT_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_DSN,
    MAX_REASON,
    MAX_VERSION,
    MSG_REJECT,
    U32,
    U63,
    VERSION,
)

_HEADER = struct.Struct(">BBI")

Intro = tuple[str, str, int, int, int, bool]
"""An introduction's fields: name, version, flags, creation, max message size, replace."""


class StrList:
    """Field marker: a list of short strings."""


FieldSpec = type | type[StrList]


def pack(*fields: Any) -> bytes:
    """One framed message with ``fields`` (the first is the message type) as its body."""
    body: bytes = msgpack.packb(list(fields), use_bin_type=True)
    return _HEADER.pack(MAGIC, VERSION, len(body)) + body


def reject_message(reason: str) -> bytes:
    """A framed ``Reject{reason}``, for a transport that refuses before any machine runs."""
    return pack(MSG_REJECT, reason[:MAX_REASON])


def read_message(buf: bytearray, pos: int, limit: int) -> tuple[list[Any], int] | None:
    """The message at ``buf[pos:]`` and the position after it; None if it is not all in yet."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    magic, version, length = _HEADER.unpack_from(buf, pos)
    if magic != MAGIC:
        raise RemoteProtocolError(f"bad handshake magic {magic}")
    if version != VERSION:
        raise RemoteProtocolError(f"unsupported handshake version {version}")
    if length > limit:
        raise ErrTooLarge(f"handshake message of {length} bytes exceeds {limit}")
    if length == 0:
        raise RemoteProtocolError("empty handshake message")
    end = pos + HEADER_SIZE + length
    if len(buf) < end:
        return None
    body = bytes(buf[pos + HEADER_SIZE : end])
    try:
        msg = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise RemoteProtocolError(f"malformed handshake message: {exc}") from None
    if type(msg) is not list or not msg or type(msg[0]) is not int:
        raise RemoteProtocolError("handshake message is not [type, fields...]")
    return msg, end


def fields(msg: list[Any], what: str, spec: Sequence[FieldSpec]) -> list[Any]:
    """``msg``'s fields, checked against ``spec`` (one type or marker per field)."""
    if len(msg) != len(spec) + 1:
        raise RemoteProtocolError(f"{what}: expected {len(spec)} fields, got {len(msg) - 1}")
    values = msg[1:]
    for i, (value, kind) in enumerate(zip(values, spec, strict=True)):
        if kind is StrList:
            if (
                type(value) is not list
                or len(value) > MAX_DSN
                or any(type(v) is not str for v in value)
            ):
                raise RemoteProtocolError(f"{what}: field {i} is not a list of strings")
        elif type(value) is not kind:
            raise RemoteProtocolError(f"{what}: field {i} is not {kind.__name__}")
    return values


def check_bytes(value: bytes, size: int, what: str, allow_empty: bool = False) -> bytes:
    """A received salt, digest or fingerprint of exactly ``size`` bytes (or empty, if allowed)."""
    if len(value) != size and not (allow_empty and not value):
        raise RemoteProtocolError(f"{what} must be {size} bytes")
    return value


def unexpected(msg: list[Any], step: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"unexpected handshake message type {msg[0]} while {step}")


def expect(msg: list[Any], kind: int, what: str) -> list[Any]:
    """``msg`` if it is of type ``kind``; else the error for a peer that sent another."""
    if msg[0] != kind:
        raise unexpected(msg, f"waiting for {what}")
    return msg


def introduce_fields(msg: list[Any]) -> tuple[Intro, bytes]:
    """An Introduce message's fields, range-checked, and its digest."""
    name, version, flags, creation, max_size, replace, digest = fields(
        msg, "Introduce", (str, str, int, int, int, bool, bytes)
    )
    if not name or len(name.encode()) > MAX_NODE_NAME_BYTES:
        raise RemoteProtocolError("Introduce: bad node name")
    if len(version) > MAX_VERSION:
        raise RemoteProtocolError("Introduce: version string too long")
    if not 0 <= flags < U32:
        raise RemoteProtocolError("Introduce: flags out of range")
    if not 0 <= creation < U63:
        raise RemoteProtocolError("Introduce: creation out of range")
    if not 0 <= max_size < U63:
        raise RemoteProtocolError("Introduce: max message size out of range")
    check_bytes(digest, DIGEST_SIZE, "Introduce digest")
    return (name, version, flags, creation, max_size, replace), digest


def printable(text: str) -> str:
    """The peer's text with control characters replaced: it ends up in our logs."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


# --- digests ------------------------------------------------------------------------


def mac(key: bytes, label: str, *parts: Any) -> bytes:
    """HMAC-SHA256 keyed by the cookie over ``[label, *parts]`` (msgpack)."""
    return hmac.new(key, msgpack.packb([label, *parts], use_bin_type=True), hashlib.sha256).digest()


def same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a, b)


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


# --- local settings -------------------------------------------------------------------


def check_fingerprint(value: bytes | None, what: str) -> bytes:
    """A certificate fingerprint argument: 32 bytes, or None (b"": no certificate)."""
    if value is None:
        return b""
    if type(value) is not bytes or len(value) != FINGERPRINT_SIZE:
        raise ErrIncorrect(f"{what} must be a {FINGERPRINT_SIZE}-byte SHA-256 digest or None")
    return value


def check_uint(value: Any, bound: int, what: str) -> int:
    """A local setting that must fit the wire: an int in ``0 <= value < bound``."""
    if type(value) is bool or not isinstance(value, int) or not 0 <= value < bound:
        raise ErrIncorrect(f"{what} must be an int in 0..{bound - 1}")
    return int(value)


def check_name(name: Any, what: str) -> str:
    """A local node name that fits an Introduce or a Join."""
    if type(name) is not str or not name or len(name.encode()) > MAX_NODE_NAME_BYTES:
        raise ErrIncorrect(f"{what} must be a non-empty node name of at most 255 bytes")
    return name
