"""Pending calls: one reply slot per request ``Ref``, registered before the request leaves.

A slot is filled at most once; a reply for a slot that is gone (timed out,
already failed) is dropped, so a late reply can never answer a later call.
Slots for calls to other nodes are indexed by node, so a lost connection fails
them all at once.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock as _allocate_lock
from typing import Any

from ergo_py.gen.errors import ErrTimeout
from ergo_py.gen.identifiers import Atom, Ref


class _Slot:
    """One reply: a bare lock held from the start, released once the answer is in.

    The waiting caller blocks on ``acquire``; whoever fills the slot releases
    it. The cheapest hand-over between two threads that Python has (a
    ``threading.Event`` builds a Condition and a second lock per wait).
    """

    __slots__ = ("done", "error", "filled", "node", "value")

    def __init__(self, node: Atom | None) -> None:
        self.done = _allocate_lock()
        self.done.acquire()
        self.filled = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.node = node


class CallTable:
    """Thread-safe table of reply slots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[Ref, _Slot] = {}
        self._by_node: dict[Atom, set[Ref]] = {}

    def register(self, ref: Ref, remote_node: Atom | None = None) -> _Slot:
        """Open a slot for ``ref``; ``remote_node`` when the callee is on another node.

        The caller keeps the slot and waits on it: a reply may fill it (and
        take it out of the table) before ``wait`` even starts.
        """
        slot = _Slot(remote_node)
        with self._lock:
            self._slots[ref] = slot
            if remote_node is not None:
                self._by_node.setdefault(remote_node, set()).add(ref)
        return slot

    def _pop(self, ref: Ref) -> _Slot | None:
        slot = self._slots.pop(ref, None)
        if slot is not None and slot.node is not None:
            refs = self._by_node.get(slot.node)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._by_node[slot.node]
        return slot

    def resolve(self, ref: Ref, value: Any, error: BaseException | None) -> bool:
        """Fill the slot; False (and nothing happens) when nobody waits for ``ref``."""
        with self._lock:
            slot = self._pop(ref)
        if slot is None:
            return False
        slot.value = value
        slot.error = error
        slot.filled = True
        slot.done.release()  # popped under the lock above: only one resolver gets here
        return True

    def cancel(self, ref: Ref) -> None:
        """Drop the slot (the request could not be sent)."""
        with self._lock:
            self._pop(ref)

    def wait(self, ref: Ref, slot: _Slot, timeout: float | None) -> Any:
        """Block for the answer: return the value or raise its error, ``ErrTimeout`` on timeout."""
        if not slot.done.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            with self._lock:
                self._pop(ref)
            if not slot.filled:  # else a reply came in just as we gave up: take it
                raise ErrTimeout(f"no reply within {timeout} s")
        if slot.error is not None:
            raise slot.error
        return slot.value

    def fail_node(self, node: Atom, error: BaseException) -> int:
        """Fail every call to ``node``; returns how many."""
        with self._lock:
            refs = list(self._by_node.get(node, ()))
        return sum(self.resolve(ref, None, error) for ref in refs)

    def fail_all(self, error: BaseException) -> int:
        """Fail every pending call (the node is stopping)."""
        with self._lock:
            refs = list(self._slots)
        return sum(self.resolve(ref, None, error) for ref in refs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)
