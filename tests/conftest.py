"""Shared fixtures: a node with the network disabled, stopped after the test, no threads left."""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ergo_py
from ergo_py import act, gen

# The suite runs on the standard asyncio loop (what a plain install uses) unless
# told otherwise: ERGO_PY_LOOP=uvloop make test runs it all on uvloop;
# test_uvloop.py covers uvloop either way.
os.environ.setdefault("ERGO_PY_LOOP", "asyncio")

_seq = itertools.count()

WAIT = 5.0  # seconds any single expected event may take before a test fails


def disabled_options(**kwargs: Any) -> gen.NodeOptions:
    """NodeOptions with the network off (and any field overridden)."""
    options = gen.NodeOptions(**kwargs)
    options.network.mode = gen.NetworkMode.DISABLED
    return options


def unique_node_name(prefix: str = "test") -> str:
    """A node name no other test in this run uses."""
    return f"{prefix}{next(_seq)}@localhost"


def wait_threads_gone(
    before: set[threading.Thread], timeout: float = WAIT
) -> list[threading.Thread]:
    """Threads started since ``before`` that are still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.01)


@pytest.fixture
def node() -> Iterator[gen.Node]:
    """A started node (network disabled); stopped afterwards; fails if threads leak."""
    before = set(threading.enumerate())
    n = ergo_py.start_node(unique_node_name(), disabled_options())
    try:
        yield n
    finally:
        n.stop()
    assert wait_threads_gone(before) == []


class Recorder(act.Actor):
    """Puts every (sender, message) it receives on the queue given to init.

    Calls are answered with ``("ok", request)``. Message ``"stop"`` ends it
    normally, ``"crash"`` raises RuntimeError.
    """

    def init(self, out: queue.Queue[Any], trap_exit: bool = False) -> None:
        self.out = out
        self.trap_exit = trap_exit

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        if message == "stop":
            self.stop()
            return
        if message == "crash":
            raise RuntimeError("crash requested")
        self.out.put((sender, message))

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return ("ok", request)

    def terminate(self, reason: Any) -> None:
        self.out.put(("terminate", reason))


def eventually(check: Callable[[], bool], timeout: float = WAIT, what: str = "") -> float:
    """Wait until ``check()``; returns the seconds it took; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    if check():  # once more at the deadline: a slow check may have eaten the last step
        return time.monotonic() - start
    pytest.fail(f"not within {timeout} s: {what}")


def get(q: queue.Queue[Any], timeout: float = WAIT) -> Any:
    """The next item, failing the test (queue.Empty) if none arrives in time."""
    return q.get(timeout=timeout)


@pytest.fixture
def key_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for test key files: RAM-backed /dev/shm when there is one, else tmp_path."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="ergo-py-test-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
