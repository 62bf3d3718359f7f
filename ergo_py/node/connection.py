"""One connection to a peer node, as the network layer keeps it (loop thread only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ergo_py.net import frames as fr
from ergo_py.net.handshake import HandshakeComplete
from ergo_py.net.link import LinkProtocol


@dataclass
class Connection:
    """A connection to one peer node: its links and what the handshake said.

    Life: current (in ``_conns``) -> draining (Close sent on every link, still
    reading until the peer's Close on each) -> closed. ``replaced``: drained
    for a hand-over to a newer connection, so its end is not a node-down.
    ``held``: frames that arrived on this connection while the one it replaces
    still had frames on the way (``waiting``); they are dispatched once those
    are in, so no sender's stream is reordered by the switch.
    """

    peer: str
    done: HandshakeComplete
    links: list[LinkProtocol] = field(default_factory=list)
    dialed: bool = False
    closed: bool = False

    sticky: dict[int, LinkProtocol] = field(default_factory=dict)
    draining: bool = False
    owing: bool = False  # draining, its Close held back for replies owed to the peer
    replaced: bool = False
    peer_done: bool = False
    held: list[tuple[LinkProtocol, list[fr.Frame] | bool]] | None = None
    waiting: set[int] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    joining: int = 0  # pool joins we dialled that have not settled yet
    grow: Callable[[], None] | None = None  # opens the pool's other links (on demand)
    growing: bool = False

    def pick(self, order: int) -> LinkProtocol:
        """The link for an order byte; the same one for as long as the connection lives.

        An order byte is bound to a link the first time it is used, so links
        that join later never reorder a sender's stream; they take new order
        bytes. (Order 0, unordered, may use any link.)
        """
        link = self.sticky.get(order)
        if link is None:
            links = self.links
            link = self.sticky.setdefault(order, links[order % len(links)])
        return link
