"""The node's event-loop thread: the one place all network I/O runs.

One ``LoopThread`` per node. It owns the thread, the loop and the tasks
started on it (:meth:`LoopThread.spawn`); ``stop()`` is the one place all of
them end. Other threads hand work over with ``call_soon`` (fire and
forget) or ``run`` (wait for a coroutine's result, bounded by a timeout). Code
running *on* the loop must never call ``run``: it would wait on itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ergo_py.gen.errors import ErrIncorrect, ErrNodeTerminated, ErrTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")


LOOP_ENV = "ERGO_PY_LOOP"
"""Environment variable choosing the node's loop: ``asyncio``, ``uvloop`` or ``auto``.

``auto`` (or unset): uvloop when it is installed (``pip install ergo_py[fast]``),
else the standard asyncio loop. uvloop halves the loop's own cost per wake-up
and per TLS record, which is most of a call's latency (docs/benchmarks.md).
"""


def loop_kind() -> str:
    """The loop new nodes use: ``"uvloop"`` or ``"asyncio"`` (see :data:`LOOP_ENV`).

    Raises ``gen.ErrIncorrect`` for an unknown setting, or for ``uvloop`` when
    it is not installed.
    """
    wanted = os.environ.get(LOOP_ENV, "").strip().lower() or "auto"
    if wanted not in ("auto", "asyncio", "uvloop"):
        raise ErrIncorrect(f"{LOOP_ENV}={wanted!r}: expected auto, asyncio or uvloop")
    if wanted == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if wanted == "uvloop":
        raise ErrIncorrect(f"{LOOP_ENV}=uvloop but uvloop is not installed")
    return "asyncio"


def new_event_loop(kind: str | None = None) -> asyncio.AbstractEventLoop:
    """A fresh loop of ``kind`` (default: the one :func:`loop_kind` names)."""
    if (kind or loop_kind()) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def wait_until(awaitable: Awaitable[Any], timeout: float) -> bool:
    """Wait for ``awaitable`` at most ``timeout`` seconds: True if it finished in time.

    The one deadline helper of the loop side: a wait that may run out is a
    normal outcome there (a peer that never closes, a join that never comes),
    not an error to catch at every call site.
    """
    try:
        async with asyncio.timeout(timeout):
            await awaitable
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None ones skipped) and wait until each has ended.

    For a ``close()`` that owns them: an error a task ends with is logged
    here rather than raised into the closer, which has its own work to finish.
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    for task in live:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("task %s ended with an error while closing", task.get_name())


class LoopThread:
    """An asyncio loop running in a daemon thread of its own.

    Tasks started with :meth:`spawn` belong to it: :meth:`stop` cancels the
    ones still running and waits for them before the loop ends, so no task
    outlives its node.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._ready = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self.kind = loop_kind()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loop = new_event_loop(self.kind)
        self._thread = threading.Thread(target=self._main, name=f"ergo-loop[{name}]", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self._cancel_leftovers()
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    def _cancel_leftovers(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    @property
    def running(self) -> bool:
        return not self._stopped

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop from any thread; raises after stop."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError as exc:  # loop closed
            raise ErrNodeTerminated(f"node {self._name} is stopped") from exc

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Loop thread: start ``coro`` as a task this loop owns (see the class docstring).

        Its result or error is for whoever holds the task.
        """
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)

    async def _end_tasks(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (not from the loop thread).

        Raises ``gen.ErrTimeout`` after ``timeout`` seconds (the coroutine is
        cancelled), and whatever the coroutine raised otherwise.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop thread")
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as exc:
            coro.close()
            raise ErrNodeTerminated(f"node {self._name} is stopped") from exc
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            fut.cancel()
            raise ErrTimeout(f"no result within {timeout} s") from exc
        except concurrent.futures.CancelledError as exc:
            raise ErrNodeTerminated(f"node {self._name} is stopping") from exc

    def stop(self, cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``cleanup`` on the loop (bounded), stop the loop and join the thread.

        Idempotent and callable from any thread but the loop's own.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True

        async def end() -> None:
            if cleanup is not None:
                await cleanup()
            await self._end_tasks()

        try:
            asyncio.run_coroutine_threadsafe(end(), self.loop).result(10.0)
        except Exception:
            log.exception("network cleanup of %s failed", self._name)
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread():
            self._thread.join(10.0)
