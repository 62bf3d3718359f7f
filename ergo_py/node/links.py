"""Links and monitors: who wants to hear when a target ends.

A *key* is what was linked or monitored, exactly as given: a ``PID``, a
``ProcessID``, an ``Alias`` or a ``NodeKey`` (a whole node). Holders may be
local or remote PIDs. The table only records; the core decides what to send.
Every method is thread-safe and never calls out while holding its lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, TypeVar

from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref


@dataclass(frozen=True)
class NodeKey:
    """A link or monitor on a node as a whole."""

    name: Atom


Key = PID | ProcessID | Alias | NodeKey


def key_node(key: Key) -> Atom:
    """The node a key lives on."""
    if isinstance(key, NodeKey):
        return key.name
    return key.node


_K = TypeVar("_K")
_V = TypeVar("_V")


def _drop(index: dict[_K, set[_V]] | dict[_K, dict[_V, Any]], key: _K, member: _V) -> None:
    """Take ``member`` out of ``index[key]``, and ``key`` out of ``index`` once it is empty."""
    members = index.get(key)
    if members is None:
        return
    if isinstance(members, set):
        members.discard(member)
    else:
        members.pop(member, None)
    if not members:
        del index[key]


def _take_links(index: dict[_K, set[_V]], reverse: dict[_V, set[_K]], key: _K) -> list[_V]:
    """Pop ``key``'s links from ``index`` and their mirror entries from ``reverse``."""
    others = list(index.pop(key, ()))
    for other in others:
        _drop(reverse, other, key)
    return others


def _take_monitors(
    index: dict[_K, dict[Ref, _V]], reverse: dict[_V, dict[Ref, _K]], key: _K
) -> list[tuple[Ref, _V]]:
    """Pop ``key``'s monitors (by ref) from ``index`` and their mirror entries from ``reverse``."""
    by_ref = list(index.pop(key, {}).items())
    for ref, other in by_ref:
        _drop(reverse, other, ref)
    return by_ref


def _take_monitor(
    index: dict[_K, dict[Ref, _V]], reverse: dict[_V, dict[Ref, _K]], key: _K, ref: Ref
) -> _V | None:
    """Pop monitor ``ref`` of ``key`` from ``index`` and its mirror from ``reverse``."""
    other = index.get(key, {}).get(ref)
    if other is not None:
        _drop(index, key, ref)
        _drop(reverse, other, ref)
    return other


class LinkTable:
    """Links (one-way, as in Ergo) and monitors, indexed both ways: by key
    (``_links``, ``_monitors``) and by holder (``_held_links``, ``_held_mons``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: dict[Key, set[PID]] = {}
        self._held_links: dict[PID, set[Key]] = {}
        self._monitors: dict[Key, dict[Ref, PID]] = {}
        self._held_mons: dict[PID, dict[Ref, Key]] = {}

    def add_link(self, holder: PID, key: Key) -> bool:
        """Record that ``holder`` links ``key``; False if it already did."""
        with self._lock:
            holders = self._links.setdefault(key, set())
            if holder in holders:
                return False
            holders.add(holder)
            self._held_links.setdefault(holder, set()).add(key)
            return True

    def remove_link(self, holder: PID, key: Key) -> bool:
        """Forget one link; False if there was none."""
        with self._lock:
            if holder not in self._links.get(key, ()):
                return False
            _drop(self._links, key, holder)
            _drop(self._held_links, holder, key)
            return True

    def add_monitor(self, holder: PID, key: Key, ref: Ref) -> None:
        """Record monitor ``ref`` of ``holder`` on ``key``."""
        with self._lock:
            self._monitors.setdefault(key, {})[ref] = holder
            self._held_mons.setdefault(holder, {})[ref] = key

    def remove_monitor(self, holder: PID, ref: Ref) -> Key | None:
        """Forget monitor ``ref``; returns its key, or None if ``holder`` had no such monitor."""
        with self._lock:
            return _take_monitor(self._held_mons, self._monitors, holder, ref)

    def take_target(self, key: Key) -> tuple[list[PID], list[tuple[Ref, PID]]]:
        """Remove and return everything on ``key``: its linkers and its monitors."""
        with self._lock:
            return (
                _take_links(self._links, self._held_links, key),
                _take_monitors(self._monitors, self._held_mons, key),
            )

    def take_monitor(self, key: Key, ref: Ref) -> PID | None:
        """Remove one monitor on ``key`` by ref; returns its holder."""
        with self._lock:
            return _take_monitor(self._monitors, self._held_mons, key, ref)

    def take_holder(self, holder: PID) -> tuple[list[Key], list[tuple[Ref, Key]]]:
        """Remove and return everything ``holder`` linked and monitored (it ended)."""
        with self._lock:
            return (
                _take_links(self._held_links, self._links, holder),
                _take_monitors(self._held_mons, self._monitors, holder),
            )

    def keys_on_node(self, name: Atom) -> list[Key]:
        """Every linked or monitored key that lives on node ``name``."""
        with self._lock:
            keys = {k for k in self._links if key_node(k) == name}
            keys.update(k for k in self._monitors if key_node(k) == name)
            return list(keys)

    def holders_on_node(self, name: Atom) -> list[PID]:
        """Every holder PID on node ``name`` (remote processes holding local links)."""
        with self._lock:
            found = {p for p in self._held_links if p.node == name}
            found.update(p for p in self._held_mons if p.node == name)
            return list(found)
