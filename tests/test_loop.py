"""The node's loop thread: hand-over, timeouts, and a clean end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ergo_py import gen
from ergo_py.net.loop import LoopThread


def test_run_returns_the_coroutine_result() -> None:
    lt = LoopThread("t")
    try:

        async def add(a: int, b: int) -> int:
            await asyncio.sleep(0)
            return a + b

        assert lt.run(add(2, 3), timeout=5) == 5
    finally:
        lt.stop()


def test_run_raises_err_timeout_and_cancels() -> None:
    lt = LoopThread("t")
    cancelled = threading.Event()
    try:

        async def slow() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(gen.ErrTimeout):
            lt.run(slow(), timeout=0.05)
        assert cancelled.wait(5)
    finally:
        lt.stop()


def test_exceptions_from_the_coroutine_reach_the_caller() -> None:
    lt = LoopThread("t")
    try:

        async def boom() -> None:
            raise gen.ErrNoConnection("gone")

        with pytest.raises(gen.ErrNoConnection):
            lt.run(boom(), timeout=5)
    finally:
        lt.stop()


def test_stop_is_idempotent_runs_cleanup_and_joins_the_thread() -> None:
    lt = LoopThread("t")
    ran = []

    async def cleanup() -> None:
        ran.append(True)

    lt.stop(cleanup)
    lt.stop(cleanup)
    assert ran == [True]
    assert not any(t.name == "ergo-loop[t]" for t in threading.enumerate())


def test_work_after_stop_raises_node_terminated() -> None:
    lt = LoopThread("t")
    lt.stop()

    async def nothing() -> None:
        return None

    with pytest.raises(gen.ErrNodeTerminated):
        lt.run(nothing(), timeout=1)
    with pytest.raises(gen.ErrNodeTerminated):
        lt.call_soon(print)


def test_run_from_the_loop_thread_is_refused() -> None:
    lt = LoopThread("t")
    try:

        async def nested() -> str:
            async def inner() -> None:
                return None

            try:
                lt.run(inner())
            except RuntimeError as exc:
                return str(exc)
            return "no error"

        assert "own loop thread" in lt.run(nested(), timeout=5)
    finally:
        lt.stop()
