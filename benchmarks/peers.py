"""Peer RPC stacks over mutual TLS, server in another OS process: Pyro5 and gRPC.

Both echo a small request, like ergo_py's ``pong``; calls/s is measured with
1 and with 16 concurrent callers by the same ``scenarios.timed_calls`` loop
that drives ergo_py, so the figures compare like with like.

- Pyro5 (thread-pool server, msgpack serializer): one proxy per caller thread
  (a Pyro proxy belongs to one thread).
- gRPC (``grpc.aio`` on both ends, generic handler, msgpack bodies, no
  protoc): the callers are asyncio tasks sharing one channel (HTTP/2
  multiplexes them), gRPC's fastest Python client shape.

Pyro5 only loads certificates from file paths (``SSL_SERVERCERT`` and friends
end up in ``SSLContext.load_cert_chain``). The private keys must not reach a
persistent disk, so each process writes its PEM into an anonymous memfd and
hands Pyro5 the ``/proc/self/fd/N`` path; the memfd lives only in that
process's memory. gRPC takes PEM bytes directly.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing as mp
import os
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
import scenarios

HOST = scenarios.HOST


def _memfd_path(data: bytes, name: str) -> str:
    """A path OpenSSL can read ``data`` from, backed by process memory only.

    Pyro5 takes certificate and key as file paths; a key must never reach a
    persistent disk, so it goes into an anonymous memfd. The descriptor stays
    open for the life of the process: Pyro5 builds its SSL context lazily, on
    first use. Where there is no memfd, a 0600 file on /dev/shm (tmpfs),
    removed at exit.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.write(fd, data)
        return f"/proc/self/fd/{fd}"
    path = f"/dev/shm/ergo-bench-{os.getpid()}-{name}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    atexit.register(os.unlink, path)
    return path


def _pyro_config(ca_pem: bytes, own: tuple[bytes, bytes], server_side: bool) -> None:
    from Pyro5 import config

    cert_path = _memfd_path(own[0] + own[1], "pyro-cert")
    config.SSL = True
    config.SSL_CACERTS = _memfd_path(ca_pem, "pyro-ca")
    config.SERIALIZER = "msgpack"
    config.COMMTIMEOUT = 10.0
    if server_side:
        config.SSL_SERVERCERT = cert_path
        config.SSL_REQUIRECLIENTCERT = True
    else:
        config.SSL_CLIENTCERT = cert_path


def _pyro_serve(ca_pem: bytes, own: tuple[bytes, bytes], uri_q: Any, stop_ev: Any) -> None:
    import threading

    import Pyro5.api

    _pyro_config(ca_pem, own, server_side=True)

    @Pyro5.api.expose
    class Pong:
        def call(self, request: Any) -> Any:
            return request

    daemon = Pyro5.api.Daemon(host=HOST, port=0)
    uri = daemon.register(Pong, "pong")
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    uri_q.put(str(uri))
    while not stop_ev.is_set():
        time.sleep(0.05)
    daemon.shutdown()


@contextmanager
def pyro(ca_pem: bytes, server: tuple[bytes, bytes], client: tuple[bytes, bytes]) -> Iterator[Any]:
    """A Pyro5 server process; yields ``make_proxy()`` for this (client) process."""
    import Pyro5.api

    ctx = mp.get_context("spawn")
    uri_q = ctx.Queue()
    stop_ev = ctx.Event()
    proc = ctx.Process(target=_pyro_serve, args=(ca_pem, server, uri_q, stop_ev), daemon=True)
    proc.start()
    try:
        uri = uri_q.get(timeout=60)
        _pyro_config(ca_pem, client, server_side=False)

        def make_proxy() -> Any:
            proxy = Pyro5.api.Proxy(uri)
            proxy._pyroBind()
            # Make sure the peer really runs over TLS (config mistakes fall back silently).
            if not isinstance(proxy._pyroConnection.sock, ssl.SSLSocket):
                raise RuntimeError("Pyro5 proxy is not using TLS")
            return proxy

        yield make_proxy
    finally:
        stop_ev.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()


def pyro_calls(make_proxy: Any, callers: int, duration: float) -> scenarios.Calls:
    proxies = [make_proxy() for _ in range(callers)]
    # timed_calls runs caller k on its own thread: hand each proxy over to it.
    owned: dict[int, bool] = {}

    def call(k: int, i: int) -> Any:
        if k not in owned:
            proxies[k]._pyroClaimOwnership()
            owned[k] = True
        return proxies[k].call(i)

    try:
        return scenarios.timed_calls(call, callers, duration)
    finally:
        for p in proxies:
            p._pyroClaimOwnership()
            p._pyroRelease()


# -- gRPC --------------------------------------------------------------------

_METHOD = "/bench.Echo/Call"


def _grpc_serve(ca_pem: bytes, own: tuple[bytes, bytes], port_q: Any, stop_ev: Any) -> None:
    import grpc

    async def echo(request: Any, context: Any) -> Any:
        return request

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo",
            {
                "Call": grpc.unary_unary_rpc_method_handler(
                    echo, request_deserializer=msgpack.unpackb, response_serializer=msgpack.packb
                )
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        creds = grpc.ssl_server_credentials(
            [(own[1], own[0])], root_certificates=ca_pem, require_client_auth=True
        )
        port = server.add_secure_port(f"{HOST}:0", creds)
        await server.start()
        port_q.put(port)
        while not stop_ev.is_set():
            await asyncio.sleep(0.05)
        await server.stop(1)

    asyncio.run(main())


@contextmanager
def grpc_server(
    ca_pem: bytes, server: tuple[bytes, bytes], client: tuple[bytes, bytes]
) -> Iterator[GrpcTarget]:
    """A gRPC server process; yields where and how to reach it."""
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    proc = ctx.Process(target=_grpc_serve, args=(ca_pem, server, port_q, stop_ev), daemon=True)
    proc.start()
    try:
        yield GrpcTarget(port_q.get(timeout=60), ca_pem, client)
    finally:
        stop_ev.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()


@dataclass(frozen=True)
class GrpcTarget:
    port: int
    ca_pem: bytes
    client: tuple[bytes, bytes]


def grpc_calls(target: GrpcTarget, callers: int, duration: float) -> scenarios.Calls:
    """``callers`` concurrent tasks on one ``grpc.aio`` channel, for ``duration`` seconds."""
    return asyncio.run(_grpc_calls(target, callers, duration))


async def _grpc_calls(target: GrpcTarget, callers: int, duration: float) -> scenarios.Calls:
    import grpc

    creds = grpc.ssl_channel_credentials(
        root_certificates=target.ca_pem,
        private_key=target.client[1],
        certificate_chain=target.client[0],
    )
    async with grpc.aio.secure_channel(f"{HOST}:{target.port}", creds) as channel:
        stub = channel.unary_unary(
            _METHOD, request_serializer=msgpack.packb, response_deserializer=msgpack.unpackb
        )
        await stub(0, timeout=30)  # connect and warm up
        sent = [0]
        samples: list[float] = []
        start = time.perf_counter()
        deadline = start + duration

        async def caller() -> None:
            i = 0
            while time.perf_counter() < deadline:
                sent[0] += 1
                t0 = time.perf_counter()
                try:
                    await stub(i, timeout=10)
                except grpc.RpcError:
                    continue
                samples.append((time.perf_counter() - t0) * 1e6)
                i += 1

        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - start
    return scenarios.Calls(sent[0], len(samples), elapsed, samples)
