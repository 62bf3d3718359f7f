"""Identifiers: Atom, PID, ProcessID, Alias, Ref.

All are immutable, hashable and ordered, and cross the wire (see
``ergo_py.net.codec``). They are plain ``__slots__`` classes, not tuples, so
that msgpack hands them to our encoder instead of flattening them into arrays.
"""

from __future__ import annotations

import os
from typing import Any


class Atom(str):
    """A name: node names, registered process names, reasons."""

    __slots__ = ()

    @property
    def host(self) -> str:
        """The part after ``@`` of a node name ("" when there is none)."""
        _, _, host = self.partition("@")
        return host

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class _Ident:
    """Shared machinery: equality, ordering and hashing over ``_key()``.

    The hash is computed once (identifiers are dict keys on every hot path).
    """

    __slots__ = ("_hash",)
    _hash: int

    def _key(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _seal(self) -> None:
        object.__setattr__(self, "_hash", hash((type(self).__name__, *self._key())))

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __lt__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return self._hash

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


class _NodeIdent(_Ident):
    """An identifier made by a node incarnation: node, an id and the creation stamp."""

    __slots__ = ("creation", "id", "node")
    node: Atom
    id: int
    creation: int

    def __init__(self, node: str, id: int, creation: int) -> None:
        object.__setattr__(self, "node", Atom(node))
        object.__setattr__(self, "id", int(id))
        object.__setattr__(self, "creation", int(creation))
        self._seal()

    def _key(self) -> tuple[Any, ...]:
        return (self.node, self.id, self.creation)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self.node), self.id, self.creation))


class PID(_NodeIdent):
    """A process: its node, a node-unique id and the node's creation stamp."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{self.node}.{self.id}.{self.creation}>"


class ProcessID(_Ident):
    """A registered name on a node: ``ProcessID("pong", "b@localhost")``."""

    __slots__ = ("name", "node")
    name: Atom
    node: Atom

    def __init__(self, name: str, node: str) -> None:
        object.__setattr__(self, "name", Atom(name))
        object.__setattr__(self, "node", Atom(node))
        self._seal()

    def _key(self) -> tuple[Any, ...]:
        return (self.name, self.node)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProcessID, (str(self.name), str(self.node)))

    def __repr__(self) -> str:
        return f"ProcessID({str(self.name)!r}, {str(self.node)!r})"


class Ref(_NodeIdent):
    """A unique reference: node, creation and a full-width id.

    The id is a full 96 bits (Ergo packs refs into fewer bits and misroutes
    aliases after 2^18 of them: ergo-services/ergo#265).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Ref#<{self.node}.{self.id:x}.{self.creation}>"


def make_ref(node: Atom, id: int, creation: int) -> Ref:
    """``Ref(node, id, creation)`` from parts already of the right types (hot paths).

    Every call makes one on each side; this skips the conversions ``Ref()``
    does for arbitrary input. ``node`` must be an ``Atom``, the others ints.
    """
    ref = _new(Ref)
    _set(ref, "node", node)
    _set(ref, "id", id)
    _set(ref, "creation", creation)
    _set(ref, "_hash", hash(("Ref", node, id, creation)))
    return ref


_new = object.__new__
_set = object.__setattr__

# Ref ids are 96 bits from the OS's CSPRNG: a peer that saw some of a node's
# refs learns nothing about the next ones (a counter would let it guess the
# ref of a call in flight). Fetched in batches, one getrandom() per
# _ID_BATCH ids; list.pop hands each to exactly one thread.
_ID_BYTES = 12
_ID_BATCH = 256
_ids: list[int] = []


def _refill() -> None:
    raw = os.urandom(_ID_BYTES * _ID_BATCH)
    step = _ID_BYTES
    _ids.extend(int.from_bytes(raw[i : i + step], "big") for i in range(0, len(raw), step))


def random_ref_id() -> int:
    """A fresh unguessable 96-bit id for a Ref or an Alias (any thread)."""
    while True:
        try:
            return _ids.pop()
        except IndexError:  # other threads may empty a refill first: go again
            _refill()


os.register_at_fork(after_in_child=_ids.clear)  # a child never repeats its parent's ids


class Alias(Ref):
    """A temporary address of a process, made from a ref; it can be deleted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Alias#<{self.node}.{self.id:x}.{self.creation}>"
