"""Retries: one backoff rule and two retry loops (blocking, asyncio) for the whole package.

Everything that tries again (the CLI waiting for a node that may still be
starting, a dial refused as simultaneous, the registrar's election and
failover, etcd's keepalive and watches, the harness waiting for a
connection) takes its delays from :class:`Backoff` and, where it is bounded,
loops through :func:`retry_until` / :func:`retry_until_async`.

Why not ``tenacity``: most of our loops are not "call f until it works" but
long-lived ones (keepalive, watch, failover) that reset their delay after a
success, log a loss once and run until cancelled; tenacity's retry decorator
fits only the bounded ones, which are a dozen lines here. A dependency for
those would not remove the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Backoff", "retry_until", "retry_until_async", "wait_until"]

T = TypeVar("T")


class Backoff:
    """Delays from ``first``, times ``factor`` each, at most ``cap``; :meth:`reset` on success.

    Not thread-safe: one loop owns one ``Backoff``.
    """

    __slots__ = ("_next", "cap", "factor", "first")

    def __init__(self, first: float, cap: float, factor: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.factor = factor
        self._next = first

    def next(self) -> float:
        """The delay before the next try (and the one after grows)."""
        delay = self._next
        self._next = min(delay * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        """After a success: the next delay is ``first`` again."""
        self._next = self.first


def _always(exc: BaseException) -> bool:
    return True


def retry_until(
    deadline: float,
    attempt: Callable[[], T],
    retry_on: tuple[type[BaseException], ...],
    *,
    retry_if: Callable[[BaseException], bool] = _always,
    backoff: Backoff | None = None,
) -> T:
    """Blocking: ``attempt()`` until it returns or ``deadline`` (``time.monotonic``) passes.

    Only errors of ``retry_on`` for which ``retry_if`` holds are retried; the
    last one is raised when time is up. Default delays: 0.05 s doubling to 1 s.
    """
    backoff = backoff or Backoff(0.05, 1.0)
    while True:
        try:
            return attempt()
        except retry_on as exc:
            left = deadline - time.monotonic()
            if left <= 0 or not retry_if(exc):
                raise
            time.sleep(min(backoff.next(), left))


async def retry_until_async(
    deadline: float | None,
    attempt: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    *,
    retry_if: Callable[[BaseException], bool] = _always,
    backoff: Backoff | None = None,
    attempts: int | None = None,
) -> T:
    """On the running loop: ``await attempt()`` until it returns, ``deadline`` or ``attempts``.

    ``deadline`` is in ``loop.time()`` (None: only ``attempts`` bounds it);
    a retry whose delay would end past the deadline is not made. The last
    error is raised when the bound is reached or ``retry_if`` refuses it.
    """
    if deadline is None and attempts is None:
        raise ValueError("retry_until_async needs a deadline or a number of attempts")
    backoff = backoff or Backoff(0.05, 1.0)
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except retry_on as exc:
            delay = backoff.next()
            if attempts is not None and tries >= attempts:
                raise
            if deadline is not None and loop.time() + delay >= deadline:
                raise
            if not retry_if(exc):
                raise
            await asyncio.sleep(delay)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Blocking: poll ``condition()`` every ``interval`` s for ``timeout`` s; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(interval, left))
