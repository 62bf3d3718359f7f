"""Keepalive: idle connections stay up; a peer that goes silent is declared gone."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import WAIT, get, wait_threads_gone

from ergo_py import gen
from ergo_py.testing import Cluster, Echo, Watcher

A = "a@127.0.0.1"
B = "b@127.0.0.1"
PERIOD = 0.1


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[A, B], start=False) as c:
        for name in (A, B):
            options = c.node_options(name)
            options.network.keepalive_period = PERIOD
            c.start(name, options)
        yield c
    assert wait_threads_gone(before) == []


def _links(node: gen.Node, peer: str) -> list[Any]:
    return list(node.network()._backend.current(peer).links)  # type: ignore[attr-defined]


def test_an_idle_connection_outlives_many_keepalive_periods(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(Echo)
    assert a.call(echo, 1) == 1
    first = a.network().info(B)["connection_id"]
    time.sleep(10 * PERIOD)  # idle: only keepalives cross
    assert a.network().info(B)["connection_id"] == first
    assert a.call(echo, 2) == 2


def test_a_peer_that_goes_silent_is_declared_gone(cluster: Cluster) -> None:
    a, b = cluster[A], cluster[B]
    echo = b.spawn(Echo)
    out: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, echo, out)
    assert a.call(echo, 1) == 1
    # White-box: B's links stop reading (so they stop answering) and stop
    # sending keepalives: from A's side the peer's host has vanished.
    links = _links(b, A)
    backend: Any = b.network()._backend  # type: ignore[attr-defined]

    async def silence() -> None:
        for link in links:
            link._keepalive = 0.0
            if link._keepalive_timer is not None:
                link._keepalive_timer.cancel()
            link._transport.pause_reading()

    backend._ctx.lt.run(silence(), timeout=WAIT)
    started = time.monotonic()
    down = get(out)
    assert isinstance(down, gen.MessageDownPID)
    assert isinstance(down.reason, gen.ErrNoConnection)
    assert "nothing from the peer" in str(down.reason)
    assert time.monotonic() - started < WAIT
