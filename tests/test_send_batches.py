"""Send batches end to end: a burst from one peer process to one recipient, as the
peer's writer merges it into one frame (``frames.send_run``), reaches the
recipient's ``handle_message`` one message at a time, in order, and behind the
frames before it; a batch nobody can take is dropped and the link serves on.

The peer is ``RawPeer`` (our handshake by hand over a real TLS socket), so the
test chooses exactly which frames travel.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Recorder, eventually, get
from framereading import run_frame
from rawpeer import RawPeer

from ergo_py import gen
from ergo_py.net import frames as fr
from ergo_py.testing import Cluster

A, M = "a@127.0.0.1", "m@127.0.0.1"


@pytest.fixture
def nodes() -> Iterator[Cluster]:
    with Cluster(names=[A]) as cluster:
        yield cluster


def _batch(sender: gen.PID, to: gen.PID | gen.ProcessID, messages: list[Any]) -> bytes:
    """The one frame a writer makes of ``messages`` sent one after the other."""
    data = run_frame(fr.FrameEncoder(), sender, to, messages, fr.order_byte(sender.id))
    assert data[7] in (fr.TYPE_SENDS_PID, fr.TYPE_SENDS_NAME)  # a batch, not a send
    return data


def test_a_batch_is_delivered_in_order_between_the_frames_around_it(nodes: Cluster) -> None:
    out: queue.Queue[Any] = queue.Queue()
    pid = nodes[A].spawn_register("rec", Recorder, out, True)
    peer = RawPeer(nodes, M, A)
    try:
        sender = gen.PID(M, 1000, peer.creation)
        batch = [(i, "x" * i) for i in range(50)] + ["plain", None, [1, 2]]
        peer.send(fr.SendPID(sender, pid, "before"))
        peer.send_bytes(_batch(sender, pid, batch))
        peer.send_bytes(_batch(sender, gen.ProcessID("rec", A), ["by name", ("t",)]))
        peer.send(fr.Exit(sender, pid, "after"))
        got = [get(out) for _ in range(1 + len(batch) + 2)]
        assert got == [(sender, m) for m in ["before", *batch, "by name", ("t",)]]
        assert [type(m) for _, m in got[1:-2]] == [type(m) for m in batch]
        exit_sender, exit_msg = get(out)  # the exit queued behind every message
        assert exit_sender == sender and isinstance(exit_msg, gen.MessageExitPID)
        # The link counts a batch as its messages (and the exit).
        want = 1 + len(batch) + 2 + 1

        def messages_in() -> int:
            return int(nodes[A].network().info(M)["messages_in"])

        eventually(lambda: messages_in() >= want, what=f"{want} messages counted in")
        assert messages_in() == want
    finally:
        peer.close()


def test_a_batch_to_an_unknown_recipient_is_dropped_and_the_link_serves_on(
    nodes: Cluster,
) -> None:
    out: queue.Queue[Any] = queue.Queue()
    pid = nodes[A].spawn(Recorder, out)
    gone = gen.PID(A, 999_999, pid.creation)
    peer = RawPeer(nodes, M, A)
    try:
        sender = gen.PID(M, 1000, peer.creation)
        peer.send_bytes(_batch(sender, gone, [1, 2, 3]))
        peer.send_bytes(_batch(sender, gen.ProcessID("nobody", A), [4, 5]))
        peer.send_bytes(_batch(sender, pid, [6, 7, 8]))
        assert [get(out) for _ in range(3)] == [(sender, 6), (sender, 7), (sender, 8)]
        assert not peer.closed_by_node(timeout=0.2)
        assert out.empty()
    finally:
        peer.close()


def test_a_malformed_batch_closes_the_link_and_the_node_keeps_serving(nodes: Cluster) -> None:
    out: queue.Queue[Any] = queue.Queue()
    pid = nodes[A].spawn(Recorder, out)
    peer = RawPeer(nodes, M, A)
    try:
        sender = gen.PID(M, 1000, peer.creation)
        data = bytearray(_batch(sender, pid, [1, 2]))
        data[-2] = 0xC1  # the last is_tuple flag: a byte msgpack never uses
        peer.send_bytes(bytes(data))
        assert peer.closed_by_node()
    finally:
        peer.close()
    again = RawPeer(nodes, M, A)
    try:
        sender = gen.PID(M, 1000, again.creation)
        again.send_bytes(_batch(sender, pid, ["still", "serving"]))
        assert [get(out), get(out)] == [(sender, "still"), (sender, "serving")]
    finally:
        again.close()
    assert out.empty()
