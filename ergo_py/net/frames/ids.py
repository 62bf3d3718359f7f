"""Identifier fields: a frame's own PIDs, names, refs and aliases, packed, checked, cached.

A frame's own identifiers (senders, recipients, targets, refs) sit in fixed
positions as plain msgpack arrays, with no extension type: every frame has
them, and the ``default=`` hook that extension types need costs about three
times as much to pack::

    PID         [node: str, id: int, creation: int]
    Ref, Alias  [node: str, id: bin (16 bytes, big-endian), creation: int]
    ProcessID   [name: str, node: str]
    target      one of the three shapes above (a PID, a ProcessID or an
                Alias; told apart by length and by the type of the id)
    PID or nil  a PID array, or nil (SpawnResult.pid)

Identifiers carry their node and creation in full: a frame means the same
thing on any link. A node sends from the same few processes and a link hears
from the same few, so both directions cache, in objects rather than module
state: a node's :class:`IdEncoder` (inside its ``FrameEncoder``) and one
:class:`IdDecoder` per link's decoder. Nodes in one process share nothing,
and a peer can churn only its own link's caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from ergo_py.gen.errors import ErrIncorrect, ImpersonationError, RemoteProtocolError
from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref
from ergo_py.net import codec

REF_ID_BYTES = 16
CACHE_MAX = 4096
"""Entries per cache. A full cache is cleared wholesale: cheaper than an LRU,
and a link's working set is far smaller."""

Encode: TypeAlias = Callable[["IdEncoder", Any], bytes]
"""A field encoder: (the node's identifier cache, the value) -> msgpack bytes."""
Check: TypeAlias = Callable[["IdDecoder", Any], Any]
"""A field decoder: (the link's identifier cache, the unpacked value) -> the field."""
PairCache: TypeAlias = dict[bytes, tuple[int, PID, Any]]
"""Pair bytes -> (frame type byte, from_, to); a pair is valid for one type only."""


def shape(value: Any) -> str:
    """What ``value`` is, for an error message (never its contents)."""
    return type(value).__name__


def ref_id_bytes(ref: Ref | Alias) -> bytes:
    """The 16 id bytes of a ref or alias; ``gen.ErrIncorrect`` if the id is larger."""
    try:
        return ref.id.to_bytes(REF_ID_BYTES, "big")
    except OverflowError as exc:
        raise ErrIncorrect(f"{ref!r}: id does not fit {REF_ID_BYTES} bytes") from exc


def _fields(obj: Any, t: type) -> list[Any]:
    if t is PID:
        return [str(obj.node), obj.id, obj.creation]
    if t is ProcessID:
        return [str(obj.name), str(obj.node)]
    return [str(obj.node), ref_id_bytes(obj), obj.creation]


def bin_header(size: int) -> bytes:
    """The msgpack bin header for ``size`` bytes."""
    if size <= 0xFF:
        return bytes((0xC4, size))
    if size <= 0xFFFF:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")  # identifiers never come near 4 GiB


class IdEncoder:
    """A node's packed identifiers, by object identity.

    An entry holds its object, so the object's id cannot be reused while it
    is cached. Refs are not cached: each call has a fresh one. dict get and
    set are atomic, so every process thread of the node may use one encoder.
    """

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[int, tuple[Any, bytes]] = {}

    def packed(self, obj: Any, t: type) -> bytes:
        """``obj`` (of exact type ``t``) as a plain msgpack array."""
        known = self._known
        hit = known.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        data = codec.encode(_fields(obj, t))
        if t is not Ref:  # refs are fresh for every call: caching them would only churn
            if len(known) >= CACHE_MAX:
                known.clear()
            known[id(obj)] = (obj, data)
        return data

    def pair_bin(self, from_pid: PID, to: Any, to_type: type) -> bytes:
        """The (from_, to) pair as the bin field that send and call frames carry."""
        pair = b"\x92" + self.packed(from_pid, PID) + self.packed(to, to_type)
        return bin_header(len(pair)) + pair


def encoder(*types: type) -> Encode:
    """The field encoder for an identifier of one of ``types`` (exactly)."""
    names = "/".join(t.__name__ for t in types)

    def encode(ids: IdEncoder, value: Any) -> bytes:
        t = type(value)
        if t not in types:
            raise ErrIncorrect(f"expected {names}, got {t.__name__}")
        hit = ids._known.get(id(value))  # IdEncoder.packed's hit, inline
        if hit is not None and hit[0] is value:
            return hit[1]
        return ids.packed(value, t)

    return encode


def encode_optional_pid(ids: IdEncoder, value: Any) -> bytes:
    """The field encoder for a PID or None."""
    if value is None:
        return b"\xc0"  # nil
    if type(value) is not PID:
        raise ErrIncorrect(f"expected PID or None, got {shape(value)}")
    return ids.packed(value, PID)


class IdDecoder:
    """Identifiers read off one link, checked, and cached by their wire fields.

    ``peer``: the node on the other end of the link, or None to check
    nothing. ``pairs``: the ``[from, to]`` pairs of send and call frames,
    by their bytes, that passed :meth:`read_pair`. Not thread-safe: the
    link's reader owns it.
    """

    __slots__ = ("_known", "pairs", "peer")

    def __init__(self, peer: str | None = None) -> None:
        self.peer = peer
        self.pairs: PairCache = {}
        self._known: dict[tuple[Any, ...], Any] = {}  # PIDs and names: the same few recur

    def _remember(self, key: tuple[Any, ...], value: Any) -> None:
        if len(self._known) >= CACHE_MAX:
            self._known.clear()
        self._known[key] = value

    def pid(self, v: Any) -> PID:
        if type(v) is list and len(v) == 3:
            node, pid_id, creation = v
            if type(node) is str and type(pid_id) is int and type(creation) is int:
                key = (node, pid_id, creation)
                pid: PID | None = self._known.get(key)
                if pid is None:
                    pid = PID(node, pid_id, creation)
                    self._remember(key, pid)
                return pid
        raise RemoteProtocolError(f"expected a PID array, got {shape(v)}")

    def name(self, v: Any) -> ProcessID:
        if type(v) is list and len(v) == 2:
            name, node = v
            if type(name) is str and type(node) is str:
                key = (name, node)
                pn: ProcessID | None = self._known.get(key)
                if pn is None:
                    pn = ProcessID(name, node)
                    self._remember(key, pn)
                return pn
        raise RemoteProtocolError(f"expected a ProcessID array, got {shape(v)}")

    def ref(self, v: Any) -> Ref:
        return Ref(*_ref_parts(v, "a Ref"))

    def alias(self, v: Any) -> Alias:
        return Alias(*_ref_parts(v, "an Alias"))

    def target(self, v: Any) -> Any:
        if type(v) is list:
            if len(v) == 2:
                return self.name(v)
            if len(v) == 3 and type(v[1]) is int:
                return self.pid(v)
            if len(v) == 3:
                return self.alias(v)
        raise RemoteProtocolError(f"expected a PID, ProcessID or Alias array, got {shape(v)}")

    def optional_pid(self, v: Any) -> PID | None:
        return None if v is None else self.pid(v)

    def read_pair(self, code: int, pair: Any, what: str, decode_to: Check) -> tuple[int, PID, Any]:
        """Decode, check and cache a pair not cached yet for frame type ``code``.

        ``what`` names the frame in errors; ``decode_to`` decodes its ``to``.
        With ``peer``, the sender must be one of the peer's processes (a link
        speaks only for its own node), else :class:`gen.ImpersonationError`.
        Checked here, once per pair: :attr:`pairs` holds only pairs that passed.
        """
        both = codec.decode(pair) if type(pair) is bytes else None
        if type(both) is not list or len(both) != 2:
            raise RemoteProtocolError(f"{what} frame: expected a [from, to] pair")
        try:
            hit = (code, self.pid(both[0]), decode_to(self, both[1]))
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"{what} frame: {exc}") from None
        if self.peer is not None and hit[1].node != self.peer:
            raise ImpersonationError(what, hit[1], self.peer)
        pairs = self.pairs
        if len(pairs) >= CACHE_MAX:
            pairs.clear()
        pairs[pair] = hit
        return hit


def _ref_parts(v: Any, what: str) -> tuple[str, int, int]:
    if type(v) is list and len(v) == 3:
        node, rid, creation = v
        if (
            type(node) is str
            and type(rid) is bytes
            and len(rid) == REF_ID_BYTES
            and type(creation) is int
        ):
            return node, int.from_bytes(rid, "big"), creation
    raise RemoteProtocolError(f"expected {what} array, got {shape(v)}")
