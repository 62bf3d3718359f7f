"""Remote spawn between a Python node and the Go peer, both ways, and its typed refusals."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import pytest
from interop_pair import (  # noqa: F401  (fixtures, by their names)
    GO,
    PY,
    WAIT,
    Pair,
    binary_fixture,
    ergo_acceptor_fixture,
    go_args_fixture,
    pair_fixture,
    start_pair,
)

from ergo_py import act, gen

pytestmark = pytest.mark.timeout(300)

SPAWNED: queue.Queue[Any] = queue.Queue()


class Worker(act.Actor):
    """Reports its start (pid, parent, args); a call returns the request with its env."""

    def init(self, *args: Any) -> None:
        SPAWNED.put((self.pid, self.parent, args))

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return [request, self.env.get("region")]


def test_python_spawns_on_go(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    assert peer.command("enable worker") == "ok enabled"
    remote = node.network().get_node(GO)
    assert remote.name == GO
    pid = remote.spawn("worker", "an arg")
    assert pid.node == GO
    assert node.call(pid, "who are you") == pid  # the Go victim answers with its PID
    named = remote.spawn_register("gworker", "worker")
    assert node.call(gen.ProcessID("gworker", GO), "who") == named != pid
    with pytest.raises(gen.ErrNameUnknown):  # Go's refusal, typed
        remote.spawn("nobody")


def test_go_spawns_on_python(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    node.network().enable_spawn("worker", Worker)
    node.network().enable_spawn("picky", Worker, "other@localhost")
    pair.go_routes_to_python()
    answer = peer.command(f"remotespawn {PY} worker")
    pid, parent, args = SPAWNED.get(timeout=WAIT)
    assert answer.startswith("ok <") and answer.endswith(f".{pid.id}>")  # Go prints <crc.hi.lo>
    assert pid.node == PY and parent.node == GO and args == ()
    assert node.call(pid, "alive?") == ["alive?", None]
    assert peer.command(f"remotespawn {PY} nobody") == "err unknown name"
    assert peer.command(f"remotespawn {PY} picky") == "err not allowed"
    assert SPAWNED.empty()


def test_spawn_not_enabled_is_refused_at_once_both_ways(binary: Path, key_dir: Path) -> None:
    acceptor = gen.AcceptorOptions(host="127.0.0.1", port=0, protocol="ergo")
    flags = gen.DEFAULT_NETWORK_FLAGS & ~gen.NetworkFlags.ENABLE_REMOTE_SPAWN
    pair = start_pair(binary, key_dir, acceptor, ("-nospawn",), flags=flags)
    try:
        node, peer = pair.node, pair.peer
        node.network().enable_spawn("worker", Worker)  # named, but spawn is off
        assert peer.command("enable worker") == "ok enabled"
        with pytest.raises(gen.ErrNotAllowed):  # the Go node's handshake offers no spawn
            node.network().get_node(GO).spawn("worker")
        pair.go_routes_to_python()
        started = time.monotonic()
        assert peer.command(f"remotespawn {PY} worker") == "err not allowed"
        assert time.monotonic() - started < 5.0  # refused, not timed out
        assert SPAWNED.empty()
    finally:
        pair.node.stop()
        pair.peer.stop()
