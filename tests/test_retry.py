"""net.retry: the one backoff rule and retry loops everything that tries again goes through."""

from __future__ import annotations

import asyncio
import time

import pytest

from ergo_py import gen
from ergo_py.net.retry import Backoff, retry_until, retry_until_async, wait_until


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_reset() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next() == 0.1


def test_retry_until_returns_the_first_success() -> None:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise gen.ErrNoConnection("not yet")
        return "up"

    got = retry_until(time.monotonic() + 5, attempt, (gen.ErrNoConnection,), backoff=Backoff(0, 0))
    assert got == "up" and len(calls) == 3


def test_retry_until_raises_the_last_error_once_the_deadline_passed() -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise gen.ErrNoConnection(f"try {len(calls)}")

    with pytest.raises(gen.ErrNoConnection, match=r"try \d+"):
        retry_until(time.monotonic() + 0.2, attempt, (gen.ErrNoConnection,))
    assert len(calls) >= 2


def test_retry_until_does_not_retry_what_retry_if_refuses_or_other_errors() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise gen.ErrNoConnection("wrong CA")

    with pytest.raises(gen.ErrNoConnection):
        retry_until(time.monotonic() + 5, refused, (gen.ErrNoConnection,), retry_if=lambda e: False)
    assert len(calls) == 1

    def other() -> None:
        raise gen.ErrIncorrect("bad input")

    with pytest.raises(gen.ErrIncorrect):
        retry_until(time.monotonic() + 5, other, (gen.ErrNoConnection,))


def test_retry_until_async_stops_after_its_attempts() -> None:
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        raise gen.ErrNoConnection("refused")

    async def main() -> None:
        await retry_until_async(
            None, attempt, (gen.ErrNoConnection,), backoff=Backoff(0.01, 0.02), attempts=3
        )

    with pytest.raises(gen.ErrNoConnection):
        asyncio.run(main())
    assert len(calls) == 3


def test_retry_until_async_makes_no_retry_that_would_end_past_its_deadline() -> None:
    calls: list[int] = []

    async def attempt() -> int:
        calls.append(1)
        raise gen.ErrNoConnection("refused")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        return await retry_until_async(
            loop.time() + 0.25, attempt, (gen.ErrNoConnection,), backoff=Backoff(0.1, 0.1)
        )

    with pytest.raises(gen.ErrNoConnection):
        asyncio.run(main())
    assert len(calls) in (2, 3)  # at 0, 0.1, maybe 0.2; never at 0.3


def test_retry_until_async_needs_a_bound() -> None:
    async def attempt() -> None:
        return None

    with pytest.raises(ValueError):
        asyncio.run(retry_until_async(None, attempt, (gen.ErrNoConnection,)))


def test_wait_until_says_whether_the_condition_came_true_in_time() -> None:
    start = time.monotonic()
    assert wait_until(lambda: time.monotonic() - start > 0.05, timeout=5)
    assert not wait_until(lambda: False, timeout=0.05, interval=0.01)
