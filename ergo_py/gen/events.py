"""Node events (``node.subscribe(pid, *event_types)``) and ``gen.Health``.

Each event is a frozen dataclass stamped with ``at`` (UTC) when it was made.
A subscriber receives them as ordinary messages, from the node's core
process. Delivery is local only: the types are not registered for the wire,
so a subscriber on another node is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Event",
    "EventCertExpiring",
    "EventCertRejected",
    "EventCertUpdated",
    "EventConnectionDown",
    "EventConnectionDrained",
    "EventConnectionUp",
    "EventTrustChanged",
    "Health",
]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    """The base of every node event."""

    at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class EventCertUpdated(Event):
    """The node's cert manager took a new certificate (``version`` counts them)."""

    version: int
    fingerprint: str
    not_after: datetime


@dataclass(frozen=True)
class EventCertRejected(Event):
    """A change to the node's cert manager was refused; the old material stays."""

    reason: str


@dataclass(frozen=True)
class EventTrustChanged(Event):
    """CA fingerprints added to and removed from the manager's pools (client and root)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class EventCertExpiring(Event):
    """A certificate expires within the margin (again at 1 day and 1 hour).

    ``node``: this node's name for its own certificate, else the peer's.
    """

    node: str
    fingerprint: str
    not_after: datetime


@dataclass(frozen=True)
class EventConnectionUp(Event):
    """A connection to ``node`` came up; ``info``: what the handshake and TLS said."""

    node: str
    info: dict[str, Any]


@dataclass(frozen=True)
class EventConnectionDown(Event):
    """The connection to ``node`` is gone for good (links and monitors fire)."""

    node: str
    reason: str


@dataclass(frozen=True)
class EventConnectionDrained(Event):
    """A connection to ``node`` finished closing (a hand-over or a disconnect)."""

    node: str
    reason: str


@dataclass(frozen=True)
class Health:
    """``node.health()``: ``ready`` unless one of ``reasons`` holds."""

    ready: bool
    reasons: list[str] = field(default_factory=list)
