"""Deeply nested terms, and msgpack bytes for them packed by hand.

The bytes are built here, not by ``ergo_py.net.codec``: the tests decode terms
the codec would refuse to encode, and check the codec against an oracle.
Extension codes as in the codec: 1 tuple, 2 atom, 7 registered dataclass.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack

from ergo_py import gen
from ergo_py.net import frames as fr

EXT_TUPLE = 1
EXT_ATOM = 2
EXT_REGISTERED = 7
BOX_NAME = "tests.deepterms.Box"


@dataclasses.dataclass(frozen=True)
class Box:
    """A registered dataclass: one extension level, like a tuple."""

    value: Any


gen.register_type(Box, BOX_NAME)


def nested_tuple(depth: int, leaf: Any = None) -> Any:
    """``leaf`` inside ``depth`` one-element tuples."""
    value = leaf
    for _ in range(depth):
        value = (value,)
    return value


def nested_list(depth: int, leaf: Any = None) -> Any:
    """``leaf`` inside ``depth`` one-element lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def ext(code: int, payload: bytes) -> bytes:
    """An extension value (ext 8, 16 or 32 by size; never fixext)."""
    n = len(payload)
    if n <= 0xFF:
        return bytes((0xC7, n, code)) + payload
    if n <= 0xFFFF:
        return b"\xc8" + struct.pack(">H", n) + bytes((code,)) + payload
    return b"\xc9" + struct.pack(">I", n) + bytes((code,)) + payload


def array(items: list[bytes]) -> bytes:
    n = len(items)
    if n <= 15:
        head = bytes((0x90 | n,))
    elif n <= 0xFFFF:
        head = b"\xdc" + struct.pack(">H", n)
    else:
        head = b"\xdd" + struct.pack(">I", n)
    return head + b"".join(items)


def nested_tuple_bytes(depth: int, leaf: bytes = b"\xc0") -> bytes:
    """``depth`` nested one-element tuples around the packed ``leaf`` (nil)."""
    data = leaf
    for _ in range(depth):
        data = ext(EXT_TUPLE, b"\x91" + data)
    return data


def tuples_of_lists_bytes(tuples: int, lists: int) -> bytes:
    """``tuples`` nested tuples, each holding ``lists`` nested lists around the next."""
    data = b"\xc0"
    for _ in range(tuples):
        data = ext(EXT_TUPLE, b"\x91" * (lists + 1) + data)
    return data


def pack(term: Any) -> bytes:
    """The msgpack bytes of ``term`` (None, bool, int, float, str, bytes, Atom,
    list, dict, tuple, Box), whatever its depth."""
    t = type(term)
    if t is tuple:
        return ext(EXT_TUPLE, array([pack(v) for v in term]))
    if t is Box:
        return ext(EXT_REGISTERED, array([pack(BOX_NAME), array([pack(term.value)])]))
    if t is gen.Atom:
        return ext(EXT_ATOM, str(term).encode())
    if t is list:
        return array([pack(v) for v in term])
    if t is dict:
        n = len(term)
        head = bytes((0x80 | n,)) if n <= 15 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(pack(k) + pack(v) for k, v in term.items())
    data: bytes = msgpack.packb(term, use_bin_type=True)
    return data


def ext_depth(term: Any) -> int:
    """How deep tuples and registered dataclasses nest in ``term`` (lists and dicts
    between them do not count; identifiers and atoms are leaves)."""
    t = type(term)
    if t is tuple:
        return 1 + max(map(ext_depth, term), default=0)
    if t is Box:
        return 1 + ext_depth(term.value)
    if t is list:
        return max(map(ext_depth, term), default=0)
    if t is dict:
        return max(map(ext_depth, [*term.keys(), *term.values()]), default=0)
    return 0


def send_frame_bytes(src: gen.PID, dst: gen.PID | gen.ProcessID, message: bytes) -> bytes:
    """A send frame (not a tuple message) whose message is the packed ``message``."""
    to: list[Any] = (
        [dst.node, dst.id, dst.creation] if isinstance(dst, gen.PID) else [dst.name, dst.node]
    )
    pair = msgpack.packb([[src.node, src.id, src.creation], to])
    body = b"\x93" + b"\xc4" + bytes((len(pair),)) + pair + b"\xc2" + message
    code = fr.TYPE_SEND_PID if isinstance(dst, gen.PID) else fr.TYPE_SEND_NAME
    return struct.pack(">BBIBB", 78, fr.VERSION, 8 + len(body), 1, code) + body
