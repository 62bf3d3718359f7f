"""Ergo's connection pool: several TCP links per connection, each sender's order kept."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest
from interop_pair import (  # noqa: F401  (fixtures, by their names)
    GO,
    PY,
    WAIT,
    Pair,
    SenderSink,
    binary_fixture,
    ergo_acceptor_fixture,
    go_args_fixture,
    go_echo,
    go_stats,
    pair_fixture,
)

from ergo_py import act, gen
from ergo_py.net.ergo import enp

pytestmark = pytest.mark.timeout(300)

SENDERS = 4
EACH = 2_500


class Sender(act.Actor):
    """On a call (target, n[, start]): sends start..start+n-1 to target, in order."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        target, n, start = (*request, 0)[:3]
        for i in range(start, start + n):
            self.send(target, i)
        return n


def ordered_from_python(node: gen.Node) -> None:
    """SENDERS Python processes send EACH integers each to the Go echo, which checks order."""
    assert node.call(go_echo(), "reset") == "ok"
    senders = [node.spawn(Sender) for _ in range(SENDERS)]
    for pid in senders:
        assert node.call(pid, (go_echo(), EACH), timeout=60) == EACH
    assert go_stats(node, SENDERS * EACH) == f"count={SENDERS * EACH} disorder=0"


def ordered_from_go(pair: Pair, out: queue.Queue[Any]) -> None:
    assert pair.peer.command(f"send {PY} sink 10000") == "ok sent 10000"
    got = [out.get(timeout=WAIT) for _ in range(10_000)]
    assert [message for _, message in got] == list(range(10_000))


def pool_links(node: gen.Node, want: int) -> int:
    deadline = time.monotonic() + WAIT
    links = 0
    while time.monotonic() < deadline:
        info = node.network().info(GO)
        links = info["pool_links"] if info else 0
        if links >= want:
            break
        time.sleep(0.02)
    return links


def test_python_dials_the_pool_go_offers(pair: Pair) -> None:
    node = pair.node
    assert node.call(go_echo(), "first") == "first"
    info = node.network().info(GO)
    assert info["dialed"] is True and info["pool_links"] == 3  # Go's default, and ours
    ordered_from_python(node)
    out: queue.Queue[Any] = queue.Queue()
    node.spawn_register("sink", SenderSink, out)
    pair.go_routes_to_python()
    ordered_from_go(pair, out)
    after = node.network().info(GO)
    assert after["connection_id"] == info["connection_id"] and after["pool_links"] == 3


def test_go_joins_the_pool_we_offer(pair: Pair) -> None:
    node = pair.node
    out: queue.Queue[Any] = queue.Queue()
    node.spawn_register("sink", SenderSink, out)
    pair.go_routes_to_python()
    assert pair.peer.command(f"callone {PY} sink first") == "ok string first"
    assert out.empty()
    assert pool_links(node, 3) == 3  # Go dialled two more links to join ours
    assert node.network().info(GO)["dialed"] is False
    ordered_from_go(pair, out)
    ordered_from_python(node)
    # One link of the pool lost: the connection goes, and comes back whole.
    node.network().disconnect(GO)
    assert node.call(go_echo(), "again") == "again"
    assert node.network().info(GO)["pool_links"] == 3


class Holder(act.Actor):
    """Monitors the Go node and links a Go process; reports whatever reaches it."""

    def init(self, out: queue.Queue[Any]) -> None:
        self.out = out
        self.trap_exit = True

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        self.monitor_node(GO)
        self.link(request)
        self.call(go_echo(), "sync")  # behind the link request: once back, the link is in place
        return "holding"

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put(message)


def slot_of(pid: gen.PID, n: int) -> int:
    return enp.order_of(pid.id) % n


def wire_of(node: gen.Node) -> Any:
    return node.network()._backend._ergo  # type: ignore[attr-defined]


def kill_link(wire: Any, slot: int) -> None:
    """Abort one TCP link of the pool (as a network failure would), and wait until it is noticed."""
    link = wire.conns[GO].links[slot]

    async def abort() -> None:
        link.abort()
        await link.gone

    wire._ctx.lt.run(abort(), timeout=WAIT)


def test_a_lost_pool_link_is_rejoined_and_the_connection_stays(pair: Pair) -> None:
    """Go's dialer redials one lost link of its pool; ours, dialling Go, does the same."""
    node, peer = pair.node, pair.peer
    assert node.call(go_echo(), "first") == "first"
    first = node.network().info(GO)
    assert first["dialed"] is True and first["pool_links"] == 3
    out: queue.Queue[Any] = queue.Queue()
    assert peer.command("spawn victim").startswith("ok ")
    holder = node.spawn(Holder, out)
    assert node.call(holder, gen.ProcessID("victim", GO)) == "holding"

    # Sender a on the slot to be lost; sender b on another slot streams all along.
    senders = [node.spawn(Sender) for _ in range(8)]
    a = senders[0]
    b = next(s for s in senders if slot_of(s, 3) != slot_of(a, 3))
    half = EACH // 2
    assert node.call(go_echo(), "reset") == "ok"
    assert node.call(a, (go_echo(), half)) == half
    go_stats(node, half)  # nothing of a's in flight on its link when it goes
    streaming: queue.Queue[Any] = queue.Queue()
    background = threading.Thread(
        target=lambda: streaming.put(node.call(b, (go_echo(), 4 * EACH), timeout=60))
    )
    background.start()
    kill_link(wire_of(node), slot_of(a, 3))
    assert node.call(a, (go_echo(), half, half), timeout=60) == half  # sent while re-joining
    background.join(timeout=60)
    assert streaming.get(timeout=1) == 4 * EACH
    stats = go_stats(node, 2 * half + 4 * EACH)
    assert stats == f"count={2 * half + 4 * EACH} disorder=0", node.call(go_echo(), "disorder")
    assert pool_links(node, 3) == 3
    after = node.network().info(GO)
    assert after["connection_id"] == first["connection_id"]
    assert out.empty()  # no node down, no exit: the connection stayed up
    # The link on it still holds: the Go process ending reaches the holder.
    assert peer.command("stop victim") == "ok stopping"
    exited = out.get(timeout=WAIT)
    assert isinstance(exited, gen.MessageExitProcessID)
    # Go's traffic takes the re-joined pool too, each sender's order kept.
    sink: queue.Queue[Any] = queue.Queue()
    node.spawn_register("sink", SenderSink, sink)
    pair.go_routes_to_python()
    ordered_from_go(pair, sink)


def test_a_lost_link_of_a_pool_we_accepted_leaves_it_and_go_rejoins(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    sink: queue.Queue[Any] = queue.Queue()
    node.spawn_register("sink", SenderSink, sink)
    pair.go_routes_to_python()
    assert peer.command(f"callone {PY} sink first") == "ok string first"
    assert pool_links(node, 3) == 3
    first = node.network().info(GO)
    kill_link(wire_of(node), 1)
    assert pool_links(node, 3) == 3  # Go re-joined it
    after = node.network().info(GO)
    assert after["connection_id"] == first["connection_id"]
    ordered_from_python(node)
