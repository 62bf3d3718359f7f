"""A trusted peer cannot speak for another node: forged replies and signals.

The attacker is ``RawPeer``: a node with a certificate from the cluster's
own CA (so TLS and the handshake admit it), writing frames by hand.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rawpeer import RawPeer

from ergo_py import act, gen
from ergo_py.net import frames as fr
from ergo_py.net.frames.types import HEADER
from ergo_py.testing import Cluster

A, B, M = "a@127.0.0.1", "b@127.0.0.1", "m@127.0.0.1"


@pytest.fixture
def nodes() -> Iterator[Cluster]:
    with Cluster(names=[A, B]) as cluster:
        yield cluster


class SlowAnswer(act.Actor):
    """Tells the test the ref of each call it gets, then answers after a while."""

    def init(self, refs: queue.Queue[gen.Ref], delay: float) -> None:
        self.refs = refs
        self.delay = delay

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        self.refs.put(ref)
        time.sleep(self.delay)
        return ("real", request)


class Trapper(act.Actor):
    """Links to a target and reports the exits it receives."""

    def init(self, target: gen.PID, out: queue.Queue[Any]) -> None:
        self.trap_exit = True
        self.out = out
        self.link(target)

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put(message)

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return "alive"


def _call_in_thread(node: gen.Node, to: Any, request: Any) -> queue.Queue[Any]:
    result: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            result.put(node.call(to, request, timeout=10))
        except gen.ErgoError as exc:
            result.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return result


def test_a_reply_from_a_node_that_was_not_called_never_answers_the_call(nodes: Cluster) -> None:
    refs: queue.Queue[gen.Ref] = queue.Queue()
    nodes[B].spawn_register("slow", SlowAnswer, refs, 1.0)
    result = _call_in_thread(nodes[A], gen.ProcessID("slow", B), "q")
    ref = refs.get(timeout=5)  # the attacker learnt the ref (the worst case)
    peer = RawPeer(nodes, M, A)
    try:
        forger = gen.PID(M, 1000, peer.creation)  # one of m's own processes: a valid frame
        peer.send(fr.CallResponse(forger, nodes[A].pid, ref, "FORGED by m"))
        peer.send(fr.CallError(forger, nodes[A].pid, ref, gen.ErrProcessUnknown("FORGED")))
        assert result.get(timeout=10) == ("real", "q")
        assert not peer.closed_by_node(timeout=0.2)  # m did nothing illegal on its own link
    finally:
        peer.close()


def test_a_reply_claiming_to_come_from_the_called_node_closes_the_forgers_link(
    nodes: Cluster,
) -> None:
    refs: queue.Queue[gen.Ref] = queue.Queue()
    callee = nodes[B].spawn_register("slow", SlowAnswer, refs, 1.0)
    result = _call_in_thread(nodes[A], callee, "q")
    ref = refs.get(timeout=5)
    peer = RawPeer(nodes, M, A)
    try:
        peer.send(fr.CallResponse(callee, nodes[A].pid, ref, "FORGED as b"))
        assert peer.closed_by_node()
        assert result.get(timeout=10) == ("real", "q")
        assert nodes[A].call(callee, "again", timeout=5) == ("real", "again")
    finally:
        peer.close()


@pytest.mark.parametrize("frame", ["exit", "down", "link", "send", "call"])
def test_frames_on_behalf_of_another_nodes_process_close_the_link(
    nodes: Cluster, frame: str
) -> None:
    b_proc = nodes[B].spawn_register("slow", SlowAnswer, queue.Queue(), 0.0)
    out: queue.Queue[Any] = queue.Queue()
    trapper = nodes[A].spawn_register("trapper", Trapper, b_proc, out)
    peer = RawPeer(nodes, M, A)
    ref = gen.Ref(B, 12345, b_proc.creation)
    forged = {
        "exit": fr.Exit(b_proc, trapper, "FORGED exit"),
        "down": fr.DownFrame(trapper, b_proc, ref, "FORGED down"),
        "link": fr.Link(b_proc, trapper),
        "send": fr.SendPID(b_proc, trapper, "FORGED message"),
        "call": fr.CallPID(b_proc, trapper, ref, "FORGED call"),
    }[frame]
    try:
        peer.send(forged)
        assert peer.closed_by_node()
    finally:
        peer.close()
    assert nodes[A].call(trapper, "still there?", timeout=5) == "alive"
    with pytest.raises(queue.Empty):
        out.get(timeout=0.3)  # nothing forged reached the process
    assert nodes[A].call(gen.ProcessID("slow", B), "x", timeout=5) == ("real", "x")


def test_refs_are_not_sequential(nodes: Cluster) -> None:
    """A peer that saw one ref cannot derive the next from it."""
    refs: queue.Queue[gen.Ref] = queue.Queue()
    nodes[B].spawn_register("slow", SlowAnswer, refs, 0.0)
    for i in range(50):
        nodes[A].call(gen.ProcessID("slow", B), i, timeout=5)
    ids = [refs.get(timeout=1).id for _ in range(50)]
    steps = {b - a for a, b in itertools.pairwise(ids)}
    assert len(steps) == len(ids) - 1  # no two steps alike: nothing to extrapolate
    assert max(ids).bit_length() > 80


def test_a_frame_announcing_4_gib_is_refused_from_its_length_prefix(nodes: Cluster) -> None:
    """The default limit (64 MiB) applies with no option set: nothing is buffered first."""
    assert nodes.options[A].network.max_message_size == gen.NetworkOptions().max_message_size
    peer = RawPeer(nodes, M, A)
    try:
        header = HEADER.pack(fr.MAGIC, fr.VERSION, 0xFFFFFFF0, 1, fr.TYPE_SEND_PID)
        peer.send_bytes(header + b"\0" * 1024)
        assert peer.closed_by_node()
    finally:
        peer.close()
    nodes[A].spawn_register("slow", SlowAnswer, queue.Queue(), 0.0)
    assert nodes[B].call(gen.ProcessID("slow", A), "ok", timeout=5) == ("real", "ok")


def test_a_message_over_the_default_limit_is_refused_at_the_sender(nodes: Cluster) -> None:
    nodes[B].spawn_register("slow", SlowAnswer, queue.Queue(), 0.0)
    with pytest.raises(gen.ErrTooLarge):
        nodes[A].send(gen.ProcessID("slow", B), b"x" * (64 << 20))
    assert nodes[A].call(gen.ProcessID("slow", B), "ok", timeout=5) == ("real", "ok")
