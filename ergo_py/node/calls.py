"""Pending calls: one reply slot per request ``Ref``, registered before the request leaves.

A slot is filled at most once; a reply for a slot that is gone (timed out,
already failed) is dropped, so a late reply can never answer a later call.
Each slot for a call to another node knows that node: only a reply that came
over that node's link fills it (a peer that learnt or guessed a ref cannot
answer someone else's call), and a lost connection fails all of them at once
(found by a scan: rare, unlike the calls themselves).
"""

from __future__ import annotations

import enum
from _thread import allocate_lock as _allocate_lock
from typing import Any

from ergo_py.gen.errors import ErrTimeout
from ergo_py.gen.identifiers import Atom, Ref


class Reply(enum.Enum):
    """What became of a reply from another node."""

    TAKEN = "taken"
    NOT_AWAITED = "not awaited"  # late (timed out, failed) or never asked for
    MISDIRECTED = "misdirected"  # names a call that was made to another node


class _Slot:
    """One reply: a bare lock held from the start, released once the answer is in.

    The waiting caller blocks on ``acquire``; whoever fills the slot releases
    it. The cheapest hand-over between two threads that Python has (a
    ``threading.Event`` builds a Condition and a second lock per wait).
    """

    __slots__ = ("done", "error", "filled", "node", "ref", "value")

    def __init__(self, ref: Ref, node: Atom | None) -> None:
        self.done = _allocate_lock()
        self.done.acquire()
        self.filled = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.node = node
        self.ref = ref


class CallTable:
    """Thread-safe table of reply slots.

    Lock-free: every change is one dict store or pop, which the GIL makes
    atomic (a pop hands a slot to exactly one resolver). Keyed by the ref's
    id: every ref in the table is this node's (the id is unique in its
    incarnation), and int keys hash and compare in C, where a Ref's hash and
    equality are Python calls; a ref with the right id but another node or
    creation does not match.
    """

    def __init__(self) -> None:
        self._slots: dict[int, _Slot] = {}
        self.misdirected = 0  # replies refused: they came from another node than the callee's

    def register(self, ref: Ref, remote_node: Atom | None = None) -> _Slot:
        """Open a slot for ``ref``; ``remote_node`` when the callee is on another node.

        The caller keeps the slot and waits on it: a reply may fill it (and
        take it out of the table) before ``wait`` even starts.
        """
        slot = _Slot(ref, remote_node)
        self._slots[ref.id] = slot  # one dict store: atomic, no lock needed
        return slot

    def resolve(self, ref: Ref, value: Any, error: BaseException | None) -> bool:
        """Fill the slot; False (and nothing happens) when nobody waits for ``ref``."""
        rid = ref.id
        slot = self._slots.get(rid)
        if slot is None or slot.ref.node != ref.node or slot.ref.creation != ref.creation:
            return False
        if self._slots.pop(rid, None) is not slot:  # atomic: one resolver gets the slot
            return False
        slot.value = value
        slot.error = error
        slot.filled = True
        slot.done.release()
        return True

    def resolve_remote(
        self, ref: Ref, from_node: Atom, value: Any, error: BaseException | None
    ) -> Reply:
        """Fill the slot with a reply that came from ``from_node``'s link.

        Only the node the call went to may answer it: a reply naming a
        pending call made to another node (or a local one) is not taken
        (``MISDIRECTED``, counted in :attr:`misdirected`); the call still
        waits for its own answer.
        """
        slot = self._slots.get(ref.id)
        if slot is not None and slot.node != from_node:
            self.misdirected += 1
            return Reply.MISDIRECTED
        return Reply.TAKEN if self.resolve(ref, value, error) else Reply.NOT_AWAITED

    def cancel(self, ref: Ref) -> None:
        """Drop the slot (the request could not be sent)."""
        self._slots.pop(ref.id, None)

    def wait(self, ref: Ref, slot: _Slot, timeout: float | None) -> Any:
        """Block for the answer: return the value or raise its error, ``ErrTimeout`` on timeout."""
        if not slot.done.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            self._slots.pop(ref.id, None)
            if not slot.filled:  # else a reply came in just as we gave up: take it
                raise ErrTimeout(f"no reply within {timeout} s")
        if slot.error is not None:
            raise slot.error
        return slot.value

    def fail_node(self, node: Atom, error: BaseException) -> int:
        """Fail every call to ``node``; returns how many."""
        refs = [slot.ref for slot in self._snapshot() if slot.node == node]
        return sum(self.resolve(ref, None, error) for ref in refs)

    def fail_all(self, error: BaseException) -> int:
        """Fail every pending call (the node is stopping)."""
        refs = [slot.ref for slot in self._snapshot()]
        return sum(self.resolve(ref, None, error) for ref in refs)

    def _snapshot(self) -> list[_Slot]:
        # Iterating the table could meet a concurrent insert; dict.copy() is
        # one C call under the GIL.
        return list(self._slots.copy().values())

    def __len__(self) -> int:
        return len(self._slots)
