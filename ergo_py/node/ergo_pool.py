"""Ergo's connection pool: one connection's TCP links, and a lost one re-joined in its place.

A packet goes on ``links[order % n]``, as Go sends: a sender's packets (one
order byte) all take one link, so the receiver keeps them in order across
the pool. When a link of a connection we dialled is lost, Go redials that
one link (``MessageJoin`` to the acceptor's pool addresses) and the
connection, and the links and monitors on it, stay up; we do the same. The
lost link's slot is :class:`Parked` meanwhile: what its senders write waits
there, in order, and goes first on the link that takes the slot, so no
sender's packets are reordered or dropped by the swap (what was already on
the lost TCP link is lost with it: ENP has no acknowledgements). On a
connection we accepted a lost link leaves the pool (the dialer redials it),
as in Go; the connection ends with its last link.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ergo_py.gen.errors import ErrNoConnection
from ergo_py.gen.identifiers import Ref
from ergo_py.net.ergo import enp
from ergo_py.net.ergo.handshake import Established
from ergo_py.node.ergo_link import ErgoLink

# What a parked slot holds at most while its link is re-joined (a bound on
# memory; the re-join itself is bounded by the connect and handshake timeouts).
PARKED_MAX_BYTES = 64 * 1024 * 1024


class Parked:
    """A pool slot whose link is being re-joined: packets wait here, in order.

    ``write`` may come from any thread; ``release`` (loop thread) writes what
    waits on the link(s) ``route`` picks, and every later write goes the same
    way, so a sender's packets keep their order across the swap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[bytes] = []
        self._size = 0
        self._route: Callable[[bytes], ErgoLink] | None = None
        self._closed: ErrNoConnection | None = None

    def write(self, data: bytes) -> None:
        if not self._hold(data):
            self._routed(data).write(data)

    def write_now(self, data: bytes) -> None:
        if not self._hold(data):
            self._routed(data).write_now(data)

    def _routed(self, data: bytes) -> ErgoLink:
        route = self._route
        assert route is not None  # set once, before _hold says False
        return route(data)

    def _hold(self, data: bytes) -> bool:
        """Keep ``data`` while parked (True); False once released."""
        with self._lock:
            if self._closed is not None:
                raise self._closed
            if self._route is not None:
                return False
            if self._size + len(data) > PARKED_MAX_BYTES:
                raise ErrNoConnection(
                    f"a pool link is being re-joined and {self._size} bytes already wait for it"
                )
            self._held.append(data)
            self._size += len(data)
            return True

    def release(self, route: Callable[[bytes], ErgoLink]) -> None:
        """Loop thread: what waits, then every later write, goes on ``route(packet)``."""
        with self._lock:
            held, self._held, self._size = self._held, [], 0
            self._route = route
            for data in held:
                route(data).write_now(data)

    def close(self, reason: ErrNoConnection) -> int:
        """The connection ended while parked: later writes raise ``reason``; how many were lost."""
        with self._lock:
            lost = len(self._held)
            self._held, self._size = [], 0
            self._closed = reason
            return lost


Slot = ErgoLink | Parked


@dataclass
class ErgoConnection:
    """A connection to one Go node: its pool of links and what the handshake said.

    ``links`` is a tuple, replaced whole on the loop thread when the pool
    changes, so process threads read it without a lock. ``rejoin`` (a
    connection we dialled, with pool addresses to dial) makes one more link
    to the given address and says whether it joined.
    """

    peer: str
    info: Established
    codec: enp.Codec
    links: tuple[Slot, ...]
    dialed: bool
    rejoin: Callable[[str], Awaitable[bool]] | None = None
    closing: bool = False

    @property
    def live(self) -> list[ErgoLink]:
        return [s for s in self.links if isinstance(s, ErgoLink)]

    @property
    def limit(self) -> int:
        return self.info.max_message_size

    def link_for(self, data: bytes) -> Slot:
        links = self.links
        return links[data[6] % len(links)]  # the packet's order byte

    def write(self, data: bytes, from_loop: bool = False) -> None:
        """Put one packet on its slot's link (or park it there); ``ErrNoConnection`` if gone."""
        slot = self.link_for(data)
        try:
            slot.write_now(data) if from_loop else slot.write(data)
        except ErrNoConnection:
            again = self.link_for(data)  # the link was lost just now: its slot may be parked
            if again is slot or self.closing:
                raise
            again.write_now(data) if from_loop else again.write(data)

    # --- the pool changes (loop thread) ----------------------------------------------

    def joined(self, link: ErgoLink) -> None:
        """A pool link came up: into a parked slot (its packets first), else one more."""
        for i, slot in enumerate(self.links):
            if isinstance(slot, Parked):
                slot.release(lambda _data: link)
                self.links = (*self.links[:i], link, *self.links[i + 1 :])
                return
        self.links = (*self.links, link)

    def park(self, link: ErgoLink) -> Parked:
        """``link`` is lost and will be re-joined: its slot holds packets meanwhile."""
        parked = Parked()
        self.links = tuple(parked if s is link else s for s in self.links)
        return parked

    def remove(self, slot: Slot) -> None:
        """``slot`` leaves the pool (what it parked goes on the links left, by order byte)."""
        left = tuple(s for s in self.links if s is not slot)
        self.links = left
        if isinstance(slot, Parked):
            live = [s for s in left if isinstance(s, ErgoLink)]
            if live:
                slot.release(lambda data: live[data[6] % len(live)])
            else:
                slot.close(ErrNoConnection(f"the connection to {self.peer} is gone"))

    def close(self, reason: ErrNoConnection | None = None) -> int:
        """Close every link; how many parked packets were lost."""
        self.closing = True
        lost = 0
        for slot in self.links:
            if isinstance(slot, Parked):
                lost += slot.close(reason or ErrNoConnection(f"disconnected from {self.peer}"))
            else:
                slot.close()
        return lost


class Wire(Protocol):
    """What the dialect's parts (spawn, links and monitors) need from the wire around them."""

    def connection(self, node: str, from_loop: bool = False) -> ErgoConnection:
        """The connection to ``node``, dialled if need be (not from the loop thread)."""
        ...

    def write(self, conn: ErgoConnection, data: bytes, from_loop: bool = False) -> None:
        """One packet to ``conn`` (size-checked)."""
        ...

    def new_ref(self) -> Ref:
        """A fresh reference of this node."""
        ...
