"""Links and monitors: who wants to hear when a target ends.

A *key* is what was linked or monitored, exactly as given: a ``PID``, a
``ProcessID``, an ``Alias`` or a ``NodeKey`` (a whole node). Holders may be
local or remote PIDs. The table only records; the core decides what to send.
Every method is thread-safe and never calls out while holding its lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

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


class LinkTable:
    """Links (one-way, as in Ergo) and monitors, indexed both ways."""

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
            return self._remove_link(holder, key)

    def _remove_link(self, holder: PID, key: Key) -> bool:
        holders = self._links.get(key)
        if holders is None or holder not in holders:
            return False
        holders.discard(holder)
        if not holders:
            del self._links[key]
        held = self._held_links.get(holder)
        if held is not None:
            held.discard(key)
            if not held:
                del self._held_links[holder]
        return True

    def add_monitor(self, holder: PID, key: Key, ref: Ref) -> None:
        """Record monitor ``ref`` of ``holder`` on ``key``."""
        with self._lock:
            self._monitors.setdefault(key, {})[ref] = holder
            self._held_mons.setdefault(holder, {})[ref] = key

    def remove_monitor(self, holder: PID, ref: Ref) -> Key | None:
        """Forget monitor ``ref``; returns its key, or None if ``holder`` had no such monitor."""
        with self._lock:
            held = self._held_mons.get(holder)
            if held is None or ref not in held:
                return None
            key = held.pop(ref)
            if not held:
                del self._held_mons[holder]
            self._drop_monitor_entry(key, ref)
            return key

    def _drop_monitor_entry(self, key: Key, ref: Ref) -> None:
        mons = self._monitors.get(key)
        if mons is not None:
            mons.pop(ref, None)
            if not mons:
                del self._monitors[key]

    def take_target(self, key: Key) -> tuple[list[PID], list[tuple[Ref, PID]]]:
        """Remove and return everything on ``key``: its linkers and its monitors."""
        with self._lock:
            linkers = list(self._links.pop(key, ()))
            for holder in linkers:
                held = self._held_links.get(holder)
                if held is not None:
                    held.discard(key)
                    if not held:
                        del self._held_links[holder]
            monitors = list(self._monitors.pop(key, {}).items())
            for ref, holder in monitors:
                hm = self._held_mons.get(holder)
                if hm is not None:
                    hm.pop(ref, None)
                    if not hm:
                        del self._held_mons[holder]
            return linkers, monitors

    def take_monitor(self, key: Key, ref: Ref) -> PID | None:
        """Remove one monitor on ``key`` by ref; returns its holder."""
        with self._lock:
            holder = self._monitors.get(key, {}).get(ref)
            if holder is None:
                return None
            self._drop_monitor_entry(key, ref)
            hm = self._held_mons.get(holder)
            if hm is not None:
                hm.pop(ref, None)
                if not hm:
                    del self._held_mons[holder]
            return holder

    def take_holder(self, holder: PID) -> tuple[list[Key], list[tuple[Ref, Key]]]:
        """Remove and return everything ``holder`` linked and monitored (it ended)."""
        with self._lock:
            keys = list(self._held_links.pop(holder, ()))
            for key in keys:
                holders = self._links.get(key)
                if holders is not None:
                    holders.discard(holder)
                    if not holders:
                        del self._links[key]
            mons = list(self._held_mons.pop(holder, {}).items())
            for ref, key in mons:
                self._drop_monitor_entry(key, ref)
            return keys, mons

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
