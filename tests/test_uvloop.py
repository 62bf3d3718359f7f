"""The optional uvloop loop (``ergo_py[fast]``): chosen by ERGO_PY_LOOP, and nodes work on it."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import WAIT, Recorder, get, wait_threads_gone

from ergo_py import gen
from ergo_py.net.loop import LOOP_ENV, LoopThread, loop_kind
from ergo_py.testing import Cluster
from ergo_py.testing.actors import Pong, Sink

uvloop = pytest.importorskip("uvloop")


def test_asyncio_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    lt = LoopThread("t")
    try:
        assert lt.kind == "asyncio"
        assert not isinstance(lt.loop, uvloop.Loop)
    finally:
        lt.stop()


@pytest.mark.parametrize("setting", ["", "auto", "uvloop", " UVLOOP "])
def test_uvloop_is_used_when_installed(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv(LOOP_ENV, setting)
    lt = LoopThread("t")
    try:
        assert lt.kind == "uvloop"
        assert isinstance(lt.loop, uvloop.Loop)

        async def answer() -> int:
            await asyncio.sleep(0)
            return 42

        assert lt.run(answer(), timeout=5) == 42
    finally:
        lt.stop()


def test_an_unknown_loop_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "trio")
    with pytest.raises(gen.ErrIncorrect):
        loop_kind()


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Nodes on uvloop, mTLS with the cluster's CA."""
    monkeypatch.setenv(LOOP_ENV, "uvloop")
    before = set(threading.enumerate())
    with Cluster(names=[], cookie="cookie", start=False) as cluster:
        yield cluster
    assert wait_threads_gone(before) == []


def test_mtls_calls_and_ordered_sends_on_uvloop(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", Pong)
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 42) == ("pong", 42)
    out: queue.Queue[Any] = queue.Queue()
    pid = b.spawn(Sink, out)
    for i in range(2_000):
        a.send(pid, i)
    assert [out.get(timeout=WAIT) for _ in range(2_000)] == list(range(2_000))
    info = a.network().info("b@127.0.0.1")
    assert info["tls_version"] is not None
    assert info["identity_verified"] is True


def test_rotation_and_reconnect_on_uvloop(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    out: queue.Queue[Any] = queue.Queue()
    pid = b.spawn(Recorder, out)
    a.send(pid, "before")
    assert get(out)[1] == "before"
    first = a.network().info("b@127.0.0.1")["peer_cert_fingerprint"]
    cam = nodes.managers["b@127.0.0.1"]
    cam.update(nodes.ca.issue("b@127.0.0.1", hosts=("127.0.0.1",)))
    a.network().reconnect("b@127.0.0.1")
    a.send(pid, "after")
    assert get(out)[1] == "after"
    second = a.network().info("b@127.0.0.1")["peer_cert_fingerprint"]
    assert second == cam.get_certificate().fingerprint != first


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_acceptors_run_tls_in_the_loops_own_layer(kind: str) -> None:
    """On uvloop the server side is uvloop's native TLS, on asyncio asyncio's; both report."""
    from ergo_py.lib import generate_self_signed_cert
    from ergo_py.net.tls import server_tls_protocol

    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        manager = gen.create_cert_manager(generate_self_signed_cert("t", "127.0.0.1"))
        proto = server_tls_protocol(
            loop, asyncio.Protocol(), manager.server_context(), 1.0, lambda peer, exc: None
        )
        native = uvloop.loop.SSLProtocol if kind == "uvloop" else asyncio.sslproto.SSLProtocol
        assert isinstance(proto, native)
    finally:
        loop.close()
