"""``with x:`` for the objects that end with ``stop()`` (nodes, file feeds) or
``close()`` (clusters, TLS listeners): the context-manager protocol written once
rather than once a class."""

from __future__ import annotations

import abc
from typing import Self

__all__ = ["CloseOnExit", "StopOnExit"]


class StopOnExit(abc.ABC):
    """``with x:`` gives ``x`` and calls ``x.stop()`` on the way out."""

    @abc.abstractmethod
    def stop(self) -> None:
        """End what ``x`` runs (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CloseOnExit(abc.ABC):
    """``with x:`` gives ``x`` and calls ``x.close()`` on the way out."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what ``x`` holds (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
