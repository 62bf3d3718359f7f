"""Node-name validation and creation stamps.

Rules (as Ergo's): at most 255 bytes of UTF-8, exactly one ``@``, a non-empty
name and host; the name part holds no ``: / ? # %``, whitespace, NBSP,
zero-width space or control characters. Unicode is fine; the host part is not
checked further (``node@host:1234`` and ``node@[::1]`` pass).
"""

from __future__ import annotations

import threading
import time
import unicodedata

from ergo_py.gen.errors import NodeError
from ergo_py.gen.identifiers import Atom
from ergo_py.gen.options import MAX_NODE_NAME_BYTES

_FORBIDDEN = frozenset(":/?#%\u00a0\u200b")


def validate_node_name(name: object) -> Atom:
    """Return ``name`` as an Atom, or raise ``NodeError`` saying what is wrong."""
    if not isinstance(name, str):
        raise NodeError(f"node name must be a str, got {type(name).__name__}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NODE_NAME_BYTES:
        raise NodeError(f"node name is longer than {MAX_NODE_NAME_BYTES} bytes")
    if name.count("@") != 1:
        raise NodeError(
            f"node name {name!r} must contain exactly one '@' (example: node@localhost)"
        )
    local, _, host = name.partition("@")
    if not local:
        raise NodeError(f"node name {name!r} has an empty name part (example: node@localhost)")
    if not host:
        raise NodeError(f"node name {name!r} has an empty host part (example: node@localhost)")
    for ch in local:
        if ch in _FORBIDDEN or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs"):
            raise NodeError(f"node name {name!r} contains a forbidden character {ch!r}")
    return Atom(name)


_creation_lock = threading.Lock()
_last_creation = 0


def next_creation() -> int:
    """Unix seconds now, but strictly greater than any stamp given out before."""
    global _last_creation
    with _creation_lock:
        stamp = max(int(time.time()), _last_creation + 1)
        _last_creation = stamp
        return stamp
