"""Batched writes from many threads onto one transport: one wake-up per burst.

Actor threads call ``write`` with frames already encoded. The first frame of a
burst schedules one flush on the loop; frames arriving before that flush runs
ride along in the same ``transport.write``. Order is the order of ``write``
calls (per thread, and under the lock across threads).

Back-pressure: while the transport's buffer is above its high-water mark
(the peer reads slower than we write), ``write`` blocks the calling thread
until it drains, as Erlang suspends a process sending to a busy distribution
port. Memory stays bounded; the loop thread itself never blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from ergo_py.gen.errors import ErrNoConnection

DEFAULT_QUEUE_LIMIT = 1 << 20
_STREAM_FRAMES = 8
_STREAM_LINGER = 0.0002  # seconds
_Make = Callable[[Any, int, list[bytes]], bytes]


class BatchWriter:
    """Queue frames from any thread; the loop writes them in one go.

    ``queue_limit``: bytes that may wait here for the loop before ``write``
    blocks (the transport's own buffer is bounded by its water marks).
    """

    __slots__ = (
        "_blocked",
        "_closed",
        "_frames",
        "_items",
        "_limit",
        "_lock",
        "_loop",
        "_loop_thread",
        "_paused",
        "_pending",
        "_queued",
        "_run",
        "_run_size",
        "_transport",
        "_writable",
        "batch_limit",
        "bytes_out",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.WriteTransport,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
    ) -> None:
        self.bytes_out = 0  # bytes handed to the transport (loop thread)
        self._loop = loop
        self._loop_thread = 0  # learnt in pause(), which asyncio calls on the loop
        self._transport = transport
        self._lock = threading.Lock()
        self._frames: list[bytes] = []
        self._queued = 0
        self._limit = queue_limit
        self._pending = False
        self._closed = False
        self._paused = False
        self._writable = threading.Event()
        self._writable.set()
        # Mirrors "not _writable.is_set()" (changed together, under the lock):
        # a plain attribute read on every write instead of a method call.
        self._blocked = False
        self._items = 0  # writes since the last flush (a burst of them is a stream)
        # The open run of write_item: (key, order, items, make). Consecutive
        # items with the same key and order become one frame, made when the
        # run ends (another write, or the flush), of at most batch_limit bytes
        # (0, until the link sets it: every item is a frame of its own).
        self._run: (
            tuple[object, int, list[bytes], Callable[[Any, int, list[bytes]], bytes]] | None
        ) = None
        self._run_size = 0
        self.batch_limit = 0

    def pause(self) -> None:
        """The transport is above its high-water mark (loop thread)."""
        self._loop_thread = threading.get_ident()
        with self._lock:
            self._paused = True
            self._blocked = True
            self._writable.clear()

    def resume(self) -> None:
        """The transport drained below its low-water mark (loop thread)."""
        with self._lock:
            self._paused = False
            if self._queued <= self._limit:
                self._blocked = False
                self._writable.set()

    def write(self, frame: bytes) -> None:
        """Queue ``frame``; raises ``gen.ErrNoConnection`` once the link is closed.

        Blocks while the peer is not keeping up, except on the loop thread
        (which must never wait for itself).
        """
        if self._blocked and threading.get_ident() != self._loop_thread:
            self._writable.wait()  # set again by resume(), _flush() or close()
        with self._lock:
            if self._closed:
                raise ErrNoConnection("link is closed")
            self._end_run()
            self._frames.append(frame)
            if not self._queued_more(len(frame)):
                return
        self._schedule()

    def write_item(
        self,
        key: object,
        order: int,
        item: bytes,
        make: _Make,
        overhead: int,
    ) -> None:
        """Queue ``item``, merged with the items queued just before it under ``key``.

        ``make(key, order, items)`` turns a run of items into the frame that
        goes out (see ``frames.send_run``); the writer never looks inside
        them. ``overhead``: the most bytes that frame adds to its items (its
        header and the key's own bytes), so that no frame outgrows
        ``batch_limit``. Blocking and errors as for :meth:`write`.
        """
        if self._blocked and threading.get_ident() != self._loop_thread:
            self._writable.wait()
        # The per-message path of every remote send: explicit acquire/release
        # and _queued_more inline (a with-block and a method call cost a
        # measurable share of it).
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise ErrNoConnection("link is closed")
            size = len(item)
            run = self._run
            if (
                run is not None
                and run[0] is key
                and run[1] == order
                and self._run_size + size <= self.batch_limit
            ):
                run[2].append(item)
                self._run_size += size
            else:
                self._end_run()
                if self.batch_limit:
                    self._run = (key, order, [item], make)
                    self._run_size = overhead + size
                else:
                    self._frames.append(make(key, order, [item]))
            self._items += 1
            queued = self._queued = self._queued + size
            if queued > self._limit:
                self._blocked = True
                self._writable.clear()  # the next write waits for this flush
            if self._pending:
                return
            self._pending = True
        finally:
            lock.release()
        self._schedule()

    def _end_run(self) -> None:
        """Turn the open run, if any, into its frame behind what came before it (lock held)."""
        run = self._run
        if run is not None:
            key, order, items, make = run
            self._run = None
            self._frames.append(make(key, order, items))

    def _queued_more(self, size: int) -> bool:
        """Count a write (lock held); True when the loop must be woken to flush."""
        self._items += 1
        self._queued += size
        if self._queued > self._limit:
            self._blocked = True
            self._writable.clear()  # the next write waits for this flush
        if self._pending:
            return False
        self._pending = True
        return True

    def _schedule(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError as exc:  # the loop is gone
            self.close()
            raise ErrNoConnection("node network is stopped") from exc

    def write_now(self, frame: bytes) -> None:
        """From the loop thread: write behind anything already queued (never blocks)."""
        with self._lock:
            if self._closed:
                raise ErrNoConnection("link is closed")
            frames = self._take()
        frames.append(frame)
        data = b"".join(frames)
        self.bytes_out += len(data)
        self._transport.write(data)

    def _take(self) -> list[bytes]:
        """Everything queued (lock held); writers may go on unless the transport is full."""
        self._end_run()
        frames, self._frames, self._queued, self._items = self._frames, [], 0, 0
        # Event.set takes its Condition and notifies even when already set;
        # it is cleared only under our lock, so this check is race-free.
        if not self._paused and self._blocked:
            self._blocked = False
            self._writable.set()
        return frames

    def _flush(self) -> None:
        with self._lock:
            if self._closed:
                self._pending = False
                return
            streaming = self._items >= _STREAM_FRAMES
            frames = self._take()
            # A stream (a burst of several writes): stay armed for a moment,
            # so the senders' next frames need no wake-up of the loop (a
            # self-pipe write each, a large share of a sender's time). A lone
            # frame, such as a call, is never delayed.
            self._pending = streaming
        if streaming:
            self._loop.call_later(_STREAM_LINGER, self._flush)
        if frames:
            data = b"".join(frames) if len(frames) > 1 else frames[0]
            self.bytes_out += len(data)  # loop thread only
            self._transport.write(data)

    def close(self, flush: bool = False) -> None:
        """Refuse further writes.

        With ``flush`` (loop thread only, transport still open) frames already
        accepted are written first, so a graceful close loses nothing that
        ``write`` accepted; otherwise they go down with the link.
        """
        with self._lock:
            self._closed = True
            self._end_run()
            frames, self._frames, self._queued = self._frames, [], 0
            self._blocked = False
        self._writable.set()  # writers waiting for room learn that it is closed
        if flush and frames and not self._transport.is_closing():
            self._transport.write(b"".join(frames))

    @property
    def closed(self) -> bool:
        return self._closed


class WriterFlowControl:
    """asyncio's flow control for a link protocol, passed on to its writer
    (``self.writer``, None until the handshake made one): a full transport
    buffer holds the writer's batches instead of growing the buffer."""

    writer: BatchWriter | None

    def pause_writing(self) -> None:
        if self.writer is not None:
            self.writer.pause()

    def resume_writing(self) -> None:
        if self.writer is not None:
            self.writer.resume()
