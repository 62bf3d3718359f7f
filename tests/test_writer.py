"""BatchWriter: frames from many threads reach the transport in order, batched."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from ergo_py import gen
from ergo_py.net.loop import LoopThread
from ergo_py.net.writer import BatchWriter


class FakeTransport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _drain(lt: LoopThread) -> None:
    async def nothing() -> None:
        await asyncio.sleep(0)

    lt.run(nothing(), timeout=5)


def test_frames_from_one_thread_arrive_in_order() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t)
        for i in range(1000):
            w.write(i.to_bytes(2, "big"))
        _drain(lt)
        data = b"".join(t.writes)
        assert [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2000, 2)] == list(
            range(1000)
        )
    finally:
        lt.stop()


def test_a_burst_is_coalesced_into_few_writes() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t)
        gate = threading.Event()
        lt.call_soon(gate.wait, 5)  # hold the loop while the burst is queued
        for _ in range(100):
            w.write(b"x")
        gate.set()
        _drain(lt)
        assert b"".join(t.writes) == b"x" * 100
        assert len(t.writes) == 1
    finally:
        lt.stop()


def test_per_thread_order_holds_with_many_writers() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t)

        def writer(tag: int) -> None:
            for i in range(300):
                w.write(bytes([tag, i % 256, i // 256]))

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        _drain(lt)
        data = b"".join(t.writes)
        seen: dict[int, list[int]] = {}
        for i in range(0, len(data), 3):
            seen.setdefault(data[i], []).append(data[i + 1] + 256 * data[i + 2])
        assert all(seen[k] == list(range(300)) for k in range(4))
    finally:
        lt.stop()


def test_write_after_close_raises_no_connection() -> None:
    lt = LoopThread("w")
    try:
        w = BatchWriter(lt.loop, FakeTransport())
        w.close()
        with pytest.raises(gen.ErrNoConnection):
            w.write(b"x")
    finally:
        lt.stop()


def test_graceful_close_writes_what_was_accepted() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t)
        gate = threading.Event()
        lt.call_soon(gate.wait, 5)  # hold the loop: the close runs before any flush
        lt.call_soon(w.close, True)
        w.write(b"a")
        w.write(b"b")
        gate.set()
        _drain(lt)
        assert t.writes == [b"ab"]
        with pytest.raises(gen.ErrNoConnection):
            w.write(b"c")
    finally:
        lt.stop()


def _on_loop(lt: LoopThread, fn: Any) -> None:
    async def run() -> None:
        fn()

    lt.run(run(), timeout=5)


def _writer_thread(w: BatchWriter, frames: int) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def write() -> None:
        for _ in range(frames):
            w.write(b"x" * 10)
        done.set()

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t, done


def test_a_paused_transport_holds_writers_back_until_resumed() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t)
        _on_loop(lt, w.pause)
        _, done = _writer_thread(w, 1)
        assert not done.wait(0.3)
        _on_loop(lt, w.resume)
        assert done.wait(5)
        _drain(lt)
        assert b"".join(t.writes) == b"x" * 10
    finally:
        lt.stop()


def test_closing_a_paused_writer_releases_writers_with_an_error() -> None:
    lt = LoopThread("w")
    try:
        w = BatchWriter(lt.loop, FakeTransport())
        _on_loop(lt, w.pause)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                w.write(b"x")
            except gen.ErrNoConnection as exc:
                errors.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        _on_loop(lt, w.close)
        thread.join(5)
        assert len(errors) == 1
    finally:
        lt.stop()


def test_writers_wait_for_the_loop_once_the_queue_is_over_its_limit() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t, queue_limit=25)
        gate = threading.Event()
        lt.call_soon(gate.wait, 5)  # the loop cannot flush yet
        _, done = _writer_thread(w, 5)
        assert not done.wait(0.3)  # 30 bytes queued > 25: the next write waits
        gate.set()
        assert done.wait(5)
        _drain(lt)
        assert b"".join(t.writes) == b"x" * 50
    finally:
        lt.stop()


def test_the_loop_thread_itself_is_never_held_back() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t)
        _on_loop(lt, w.pause)
        _on_loop(lt, lambda: w.write(b"from the loop"))
        _drain(lt)
        assert b"".join(t.writes) == b"from the loop"
    finally:
        lt.stop()


def _make(key: Any, order: int, items: list[bytes]) -> bytes:
    """A stand-in for frames.send_run: shows which items went out together."""
    return b"[" + bytes([order]) + key + b":" + b",".join(items) + b"]"


def _held(lt: LoopThread, writer: BatchWriter, queue: Any) -> list[bytes]:
    """What ``queue(writer)`` writes while the loop is held, flushed as one write."""
    t: Any = writer._transport
    gate = threading.Event()
    lt.call_soon(gate.wait, 5)
    queue(writer)
    gate.set()
    _drain(lt)
    _drain(lt)
    return list(t.writes)


def test_items_under_one_key_go_out_as_one_frame_and_keep_their_place() -> None:
    lt = LoopThread("w")
    try:
        w = BatchWriter(lt.loop, FakeTransport())
        w.batch_limit = 1000
        a, b = b"a", b"b"

        def queue(w: BatchWriter) -> None:
            for i in range(3):
                w.write_item(a, 1, b"%d" % i, _make, 10)
            w.write(b"<frame>")  # ends the run: it stays behind the items before it
            w.write_item(a, 1, b"3", _make, 10)
            w.write_item(b, 1, b"4", _make, 10)  # another key: a run of its own
            w.write_item(b, 2, b"5", _make, 10)  # another order byte: likewise

        assert b"".join(_held(lt, w, queue)) == (b"[\x01a:0,1,2]<frame>[\x01a:3][\x01b:4][\x02b:5]")
    finally:
        lt.stop()


def test_a_run_never_outgrows_the_batch_limit() -> None:
    lt = LoopThread("w")
    try:
        w = BatchWriter(lt.loop, FakeTransport())
        w.batch_limit = 10 + 3 * 4  # room for the overhead and three 4-byte items
        written = _held(
            lt, w, lambda w: [w.write_item(b"k", 1, b"%04d" % i, _make, 10) for i in range(7)]
        )
        assert b"".join(written) == b"[\x01k:0000,0001,0002][\x01k:0003,0004,0005][\x01k:0006]"
    finally:
        lt.stop()


def test_without_a_batch_limit_every_item_is_its_own_frame() -> None:
    lt = LoopThread("w")
    try:
        w = BatchWriter(lt.loop, FakeTransport())
        written = _held(
            lt, w, lambda w: [w.write_item(b"k", 1, b"%d" % i, _make, 10) for i in range(3)]
        )
        assert b"".join(written) == b"[\x01k:0][\x01k:1][\x01k:2]"
    finally:
        lt.stop()


def test_a_graceful_close_writes_the_open_run_and_refuses_more_items() -> None:
    lt = LoopThread("w")
    try:
        t = FakeTransport()
        w = BatchWriter(lt.loop, t)
        w.batch_limit = 1000
        gate = threading.Event()

        def hold_then_close() -> None:  # runs before the flush the items ask for
            gate.wait(5)
            w.close(flush=True)

        lt.call_soon(hold_then_close)
        w.write_item(b"k", 1, b"0", _make, 10)
        w.write_item(b"k", 1, b"1", _make, 10)
        gate.set()
        _drain(lt)
        assert b"".join(t.writes) == b"[\x01k:0,1]"
        with pytest.raises(gen.ErrNoConnection):
            w.write_item(b"k", 1, b"2", _make, 10)
    finally:
        lt.stop()
