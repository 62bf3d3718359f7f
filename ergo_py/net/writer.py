"""Batched writes from many threads onto one transport: one wake-up per burst.

Actor threads call ``write`` with frames already encoded. The first frame of a
burst schedules one flush on the loop; frames arriving before that flush runs
ride along in the same ``transport.write``. Order is the order of ``write``
calls (per thread, and under the lock across threads).
"""

from __future__ import annotations

import asyncio
import threading

from ergo_py.gen.errors import ErrNoConnection


class BatchWriter:
    """Queue frames from any thread; the loop writes them in one go."""

    __slots__ = ("_closed", "_frames", "_lock", "_loop", "_pending", "_transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport) -> None:
        self._loop = loop
        self._transport = transport
        self._lock = threading.Lock()
        self._frames: list[bytes] = []
        self._pending = False
        self._closed = False

    def write(self, frame: bytes) -> None:
        """Queue ``frame``; raises ``gen.ErrNoConnection`` once the link is closed."""
        with self._lock:
            if self._closed:
                raise ErrNoConnection("link is closed")
            self._frames.append(frame)
            if self._pending:
                return
            self._pending = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError as exc:  # the loop is gone
            self.close()
            raise ErrNoConnection("node network is stopped") from exc

    def write_now(self, frame: bytes) -> None:
        """From the loop thread: write behind anything already queued."""
        with self._lock:
            if self._closed:
                raise ErrNoConnection("link is closed")
            frames, self._frames = self._frames, []
        frames.append(frame)
        self._transport.write(b"".join(frames))

    def _flush(self) -> None:
        with self._lock:
            frames, self._frames, self._pending = self._frames, [], False
            if self._closed:
                return
        if frames:
            self._transport.write(b"".join(frames) if len(frames) > 1 else frames[0])

    def close(self, flush: bool = False) -> None:
        """Refuse further writes.

        With ``flush`` (loop thread only, transport still open) frames already
        accepted are written first, so a graceful close loses nothing that
        ``write`` accepted; otherwise they go down with the link.
        """
        with self._lock:
            self._closed = True
            frames, self._frames = self._frames, []
        if flush and frames and not self._transport.is_closing():
            self._transport.write(b"".join(frames))

    @property
    def closed(self) -> bool:
        return self._closed
