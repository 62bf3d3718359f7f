"""A peer cannot flood a node's log: lines it causes are rate-limited, with counts."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from ergo_py import act, gen
from ergo_py.net.ratelog import LogLimiter
from ergo_py.testing import Cluster

A, B = "a@127.0.0.1", "b@127.0.0.1"


def test_a_limiter_passes_a_burst_then_counts_what_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("ergo_py.test_ratelog")
    limiter = LogLimiter(logger, burst=3, period=0.2)
    with caplog.at_level(logging.INFO, logger=logger.name):
        passed = [limiter.log(logging.INFO, "peer-x", "line %d", i) for i in range(10)]
        assert limiter.log(logging.INFO, "peer-y", "another kind")  # its own budget
        time.sleep(0.25)
        assert limiter.log(logging.INFO, "peer-x", "line %d", 10)
    assert passed == [True] * 3 + [False] * 7
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert lines[-1] == "line 10 (and 7 more like it since the last one, not logged)"


class _Flag(act.Actor):
    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: object) -> object:
        return "done"


@pytest.fixture
def nodes() -> Iterator[Cluster]:
    with Cluster(names=[A, B]) as cluster:
        yield cluster


def test_thousands_of_undeliverable_messages_log_a_handful_of_lines(
    nodes: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = gen.ProcessID("nobody", B)
    with caplog.at_level(logging.INFO, logger="ergo_py"):
        for i in range(20_000):
            nodes[A].send(nobody, i)
        nodes[B].spawn_register("flag", _Flag)
        assert nodes[A].call(gen.ProcessID("flag", B), "done?", timeout=10) == "done"
    lines = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert 1 <= len(lines) <= 5


def test_a_stream_of_garbage_connections_logs_a_handful_of_lines(
    nodes: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    port = nodes.options[A].network.acceptors[0].port
    with caplog.at_level(logging.INFO, logger="ergo_py"):
        for _ in range(60):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.settimeout(5)
                try:
                    while sock.recv(4096):
                        pass
                except OSError:
                    pass
        nodes[B].spawn_register("flag", _Flag)
        assert nodes[A].call(gen.ProcessID("flag", B), "done?", timeout=10) == "done"
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= 5  # 60 connections, each refused
