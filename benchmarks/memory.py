"""Memory: resident set size per idle connection and per idle actor.

- Per idle connection: a fresh node b in its own process; a client process
  starts K nodes, each connects to b (one call) and then stays idle. b's RSS
  delta / K. An ergo_py connection is a pool of links (3 by default), each
  its own TLS connection. Baseline: a raw asyncio mTLS echo server, K idle
  connections (one request/response each), server RSS delta / K.
- Per idle actor: a fresh process starts a node without networking, spawns M
  actors that wait for messages, RSS delta / M. Baseline: M bare pykka
  ``ThreadingActor``s in a fresh process (each is a thread, like an ergo_py
  process).

Fresh processes each time, so memory freed by an earlier round is not reused
and hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing as mp
import ssl
import time
from typing import Any

import psutil
import scenarios

import ergo_py
from ergo_py import gen
from ergo_py.lib import CertificateAuthority
from ergo_py.testing import Idle

HOST = scenarios.HOST
SETTLE_S = 0.5


def _rss(pid: int | None = None) -> int:
    return int(psutil.Process(pid).memory_info().rss)


# -- idle actors (ergo_py.testing.Idle: waits for messages and never gets any) --


def _actors_child(kind: str, m: int, out_q: Any) -> None:
    import pykka

    class BareIdle(pykka.ThreadingActor):
        pass

    if kind == "ergo":
        opts = gen.NodeOptions()
        opts.network.mode = gen.NetworkMode.DISABLED
        with ergo_py.start_node("mem@localhost", opts) as node:
            node.spawn(Idle)  # warm up imports and first-use allocations
            gc.collect()
            time.sleep(SETTLE_S)
            before = _rss()
            for _ in range(m):
                node.spawn(Idle)
            gc.collect()
            time.sleep(SETTLE_S)
            out_q.put((_rss() - before) / m)
    else:
        BareIdle.start()
        gc.collect()
        time.sleep(SETTLE_S)
        before = _rss()
        for _ in range(m):
            BareIdle.start()
        gc.collect()
        time.sleep(SETTLE_S)
        out_q.put((_rss() - before) / m)
        pykka.ActorRegistry.stop_all()


def per_actor(kind: str, m: int) -> float:
    """Bytes of RSS per idle actor (``kind``: "ergo" or "pykka"), in a fresh process."""
    ctx = mp.get_context("spawn")
    out_q = ctx.Queue()
    proc = ctx.Process(target=_actors_child, args=(kind, m, out_q), daemon=True)
    proc.start()
    try:
        return float(out_q.get(timeout=120))
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


# -- idle connections: ergo_py ---------------------------------------------------


def _many_nodes(ca_pem: scenarios.CAPem, port: int, k: int, ready_ev: Any, stop_ev: Any) -> None:
    pong = gen.ProcessID("pong0", scenarios.B)
    with contextlib.ExitStack() as stack:
        for i in range(k):
            name = f"m{i}@{HOST}"
            node = stack.enter_context(ergo_py.start_node(name, scenarios.options(ca_pem, name)))
            node.network().add_route("b@.*", gen.NetworkRoute(host=HOST, port=port))
            node.call(pong, i, timeout=30)
        ready_ev.set()
        while not stop_ev.is_set():
            time.sleep(0.05)


def per_ergo_connection(ca_pem: scenarios.CAPem, k: int) -> float:
    """Bytes of node b's RSS per idle node connection, b fresh in its own process."""
    ctx = mp.get_context("spawn")
    with scenarios.server(ca_pem) as srv:
        time.sleep(SETTLE_S)
        before = _rss(srv.pid)
        ready_ev = ctx.Event()
        stop_ev = ctx.Event()
        proc = ctx.Process(
            target=_many_nodes, args=(ca_pem, srv.port, k, ready_ev, stop_ev), daemon=True
        )
        proc.start()
        try:
            if not ready_ev.wait(120):
                raise RuntimeError("client nodes did not connect")
            time.sleep(2 * SETTLE_S)  # let background pool joins finish
            return (_rss(srv.pid) - before) / k
        finally:
            stop_ev.set()
            proc.join(30)
            if proc.is_alive():
                proc.kill()


# -- idle connections: raw TLS baseline ----------------------------------------------


def _contexts(ca_pem: scenarios.CAPem, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = CertificateAuthority.from_pem(*ca_pem)
    cam = gen.create_cert_auth_manager(ca.issue(name, hosts=(HOST,)))
    cam.set_client_cas(ca.pool())
    cam.set_root_cas(ca.pool())
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    return cam.server_context(), cam.client_context(False)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.t.write(data)


def _raw_serve(ca_pem: scenarios.CAPem, port_q: Any, stop_ev: Any) -> None:
    async def main() -> None:
        server_ctx, _ = _contexts(ca_pem, f"raw@{HOST}")
        server = await asyncio.get_running_loop().create_server(_Echo, HOST, 0, ssl=server_ctx)
        port_q.put(server.sockets[0].getsockname()[1])
        while not stop_ev.is_set():
            await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())


def per_raw_connection(ca_pem: scenarios.CAPem, k: int) -> float:
    """Bytes of a raw asyncio mTLS echo server's RSS per idle connection."""
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    proc = ctx.Process(target=_raw_serve, args=(ca_pem, port_q, stop_ev), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=60)
        _, client_ctx = _contexts(ca_pem, f"rawc@{HOST}")
        assert proc.pid is not None
        pid = proc.pid

        async def run() -> float:
            time.sleep(SETTLE_S)
            before = _rss(pid)
            conns = []
            for _ in range(k):
                reader, writer = await asyncio.open_connection(
                    HOST, port, ssl=client_ctx, server_hostname=None
                )
                writer.write(b"ping")
                await reader.readexactly(4)
                conns.append(writer)
            await asyncio.sleep(2 * SETTLE_S)
            delta = (_rss(pid) - before) / k
            for w in conns:
                w.close()
            return delta

        return asyncio.run(run())
    finally:
        stop_ev.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()
