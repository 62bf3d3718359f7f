"""Ergo's connection pool: several TCP links per connection, each sender's order kept."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
from interop_pair import (  # noqa: F401  (fixtures, by their names)
    GO,
    PY,
    WAIT,
    Pair,
    Sink,
    binary_fixture,
    ergo_acceptor_fixture,
    go_args_fixture,
    go_echo,
    go_stats,
    pair_fixture,
)

from ergo_py import act, gen

pytestmark = pytest.mark.timeout(300)

SENDERS = 4
EACH = 2_500


class Sender(act.Actor):
    """On a call (target, n): sends 0..n-1 to target, in order."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        target, n = request
        for i in range(n):
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
    node.spawn_register("sink", Sink, out)
    pair.go_routes_to_python()
    ordered_from_go(pair, out)
    after = node.network().info(GO)
    assert after["connection_id"] == info["connection_id"] and after["pool_links"] == 3


def test_go_joins_the_pool_we_offer(pair: Pair) -> None:
    node = pair.node
    out: queue.Queue[Any] = queue.Queue()
    node.spawn_register("sink", Sink, out)
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
