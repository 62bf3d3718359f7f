"""Meta-process servers against the same server code run directly, over TLS on loopback.

Two server processes, started once and kept for every round:

- **meta** (``_serve_meta``): a node (network off) whose cert manager holds a
  server certificate from ``lib.CertificateAuthority``; on it a
  ``meta.WebServer`` serving ``app`` (a trivial ASGI app, a 13-byte body) and
  a ``meta.TCPServer`` whose pool actors (``EchoActor``, one per client
  connection) send every ``MessageTCP`` back to its connection. Each
  connection's TLS comes from the cert manager (``ListenerTLS``: a context
  looked up per handshake), which is what rotation support costs.
- **baseline** (``_serve_baseline``): on one loop, Hypercorn serving the same
  ``app`` through its normal API (``hypercorn.asyncio.serve``, a static
  certificate in ``Config.certfile``/``keyfile``), and a plain asyncio TLS
  server echoing what it reads (``EchoProtocol``), with a static context.

Both use the loop nodes use (``ergo_py.net.loop.new_event_loop``: uvloop when
installed), the same certificate authority, server-authenticated TLS 1.3
(no client certificates, no session resumption by the client), and the same
Hypercorn settings (read and keep-alive timeouts, no access log). The key
reaches Hypercorn (which only loads paths) through a memfd, never a disk.

The client (``measure``) runs in the calling process on its own loop and is the
same for both sides: raw HTTP/1.1 over asyncio TLS (a small protocol that
writes a request and parses the response's length, no HTTP library), and a
raw TLS echo client. Figures, each over a fixed time, bounded in count:

- ``web_keepalive``: requests/s, ``CONNS`` keep-alive connections, one request
  in flight on each;
- ``web_new``: requests/s when every request is a new connection (TCP + TLS
  handshake, ``Connection: close``), ``CONNS`` such loops at once;
- ``tcp_stream``: echoed MiB/s, ``CONNS`` connections each keeping
  ``STREAM_WINDOW`` bytes in flight in ``STREAM_CHUNK``-byte writes;
- ``tcp_pingpong``: echoes/s of a ``PING``-byte message, ``CONNS``
  connections, one message in flight on each.

    python benchmarks/meta_servers.py   # one quick round, printed
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import peers
import scenarios

import ergo_py
from ergo_py import act, gen, meta
from ergo_py.lib import CertificateAuthority
from ergo_py.net.loop import new_event_loop
from ergo_py.node.asgi import answer_lifespan, respond

HOST = scenarios.HOST
CONNS = 4
STREAM_CHUNK = 16 * 1024
STREAM_WINDOW = 4 * STREAM_CHUNK
PING = 64
BODY = b"hello, world\n"
MAX_REQUESTS = 2_000_000  # a bound on every timed loop, besides its time
# Hypercorn (on both sides) closes a keep-alive connection after 1,000
# requests (its keep_alive_max_requests); the keep-alive figure stops short
# of that on every connection, so no side is timed across a reconnect.
KEEPALIVE_PER_CONN = 950
MIB = 1024.0 * 1024.0

CAPem = tuple[bytes, bytes]

# The web server logs each refused handshake and lifecycle at INFO; the bench output is its table.
logging.getLogger("ergo_py").setLevel(logging.WARNING)
logging.getLogger("hypercorn").setLevel(logging.WARNING)


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app both web servers serve: a fixed small body (lifespan acknowledged)."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
    elif scope["type"] == "http":
        await respond(send, 200, BODY)


class EchoActor(act.Actor):
    """A ``TCPServer`` pool process: writes back every ``MessageTCP`` it gets."""

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        if isinstance(message, meta.MessageTCP):
            self.send(message.id, meta.MessageTCP(message.id, message.data))


class EchoProtocol(asyncio.Protocol):
    """The raw baseline: writes back what it reads."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: Any = transport

    def data_received(self, data: bytes) -> None:
        self.t.write(data)


def _server_pem(ca_pem: CAPem, name: str) -> tuple[bytes, bytes]:
    ca = CertificateAuthority.from_pem(*ca_pem)
    return ca.issue(name, hosts=(HOST,)).to_pem()


def _wait(stop_ev: Any) -> None:
    while not stop_ev.is_set():
        time.sleep(0.05)


def _serve_meta(ca_pem: CAPem, port_q: Any, stop_ev: Any) -> None:
    name = f"meta@{HOST}"
    cert_pem, key_pem = _server_pem(ca_pem, name)
    opts = gen.NodeOptions(
        cert_manager=gen.create_cert_auth_manager(gen.Certificate.from_pem(cert_pem, key_pem))
    )
    opts.network.mode = gen.NetworkMode.DISABLED
    with ergo_py.start_node(name, opts) as node:
        web = meta.WebServer(meta.WebServerOptions(host=HOST, port=0, app=app))
        node.spawn_meta(web)
        pool = [node.spawn(EchoActor) for _ in range(CONNS)]
        tcp = meta.TCPServer(meta.TCPServerOptions(host=HOST, port=0, process_pool=pool))
        node.spawn_meta(tcp)
        port_q.put((web.port, tcp.port))
        _wait(stop_ev)


def _serve_baseline(ca_pem: CAPem, port_q: Any, stop_ev: Any) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    cert_pem, key_pem = _server_pem(ca_pem, f"baseline@{HOST}")
    defaults = meta.WebServerOptions()
    config = Config()
    config.certfile = peers._memfd_path(cert_pem, "hypercorn-cert")
    config.keyfile = peers._memfd_path(key_pem, "hypercorn-key")
    config.read_timeout = defaults.read_timeout  # type: ignore[assignment]
    config.keep_alive_timeout = defaults.keep_alive_timeout
    config.accesslog = None
    config.loglevel = "WARNING"
    listener = socket.create_server((HOST, 0))
    web_port = listener.getsockname()[1]
    config.bind = [f"fd://{listener.detach()}"]
    echo_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    echo_ctx.load_cert_chain(config.certfile, config.keyfile)

    async def stopped() -> None:
        while not stop_ev.is_set():
            await asyncio.sleep(0.05)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        echo = await loop.create_server(EchoProtocol, HOST, 0, ssl=echo_ctx)
        port_q.put((web_port, echo.sockets[0].getsockname()[1]))
        await serve(app, config, shutdown_trigger=stopped, mode="asgi")  # type: ignore[arg-type]
        echo.close()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@dataclass(frozen=True)
class Ports:
    web: int
    tcp: int


@dataclass(frozen=True)
class Servers:
    meta: Ports
    base: Ports
    ca_pem: bytes  # the CA, for the client's trust store


@contextmanager
def servers(ca_pem: CAPem) -> Iterator[Servers]:
    """Both server processes for the duration of the block."""
    ctx = mp.get_context("spawn")
    stop_ev = ctx.Event()
    procs = []
    ports = []
    try:
        for target in (_serve_meta, _serve_baseline):
            q = ctx.Queue()
            proc = ctx.Process(target=target, args=(ca_pem, q, stop_ev), daemon=True)
            proc.start()
            procs.append(proc)
            ports.append(Ports(*q.get(timeout=60)))
        ca = CertificateAuthority.from_pem(*ca_pem)
        yield Servers(ports[0], ports[1], ca.pool().to_pem().encode())
    finally:
        stop_ev.set()
        for proc in procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()


# -- the client ----------------------------------------------------------------

REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
REQUEST_CLOSE = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()


class _HTTP(asyncio.Protocol):
    """HTTP/1.1 over TLS, one request in flight: counts complete responses until ``deadline``."""

    def __init__(self, request: bytes, deadline: float, limit: int) -> None:
        self.request = request
        self.deadline = deadline
        self.limit = limit
        self.buf = b""
        self.count = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: Any = transport
        self.t.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            if not head.startswith(b"http/1.1 200"):
                self._finish(RuntimeError(f"unexpected response {head[:40]!r}"))
                return
            at = head.find(b"content-length:")
            size = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
            if len(buf) < end + 4 + size:
                break
            buf = buf[end + 4 + size :]
            self.count += 1
            if self.count >= self.limit or time.perf_counter() >= self.deadline:
                self.buf = buf
                self._finish(None)
                return
            self.t.write(self.request)
        self.buf = buf

    def _finish(self, exc: BaseException | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or ConnectionError("closed before the response"))


class _Echo(asyncio.Protocol):
    """Keeps ``window`` bytes in flight in ``chunk``-byte writes until ``deadline``; then drains."""

    def __init__(self, chunk: int, window: int, deadline: float, limit: int) -> None:
        self.chunk = b"x" * chunk
        self.window = window
        self.deadline = deadline
        self.limit = limit
        self.sent = 0
        self.got = 0
        self.stopping = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: Any = transport
        self._fill()

    def _fill(self) -> None:
        while self.sent - self.got < self.window:
            self.t.write(self.chunk)
            self.sent += len(self.chunk)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if not self.stopping and (
            time.perf_counter() >= self.deadline or self.got >= self.limit * len(self.chunk)
        ):
            self.stopping = True
        if not self.stopping:
            self._fill()
        elif self.got >= self.sent and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed mid-echo"))


def _client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


async def _keepalive(port: int, ctx: ssl.SSLContext, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(CONNS):  # connect first, so the handshakes are not timed
        t, p = await loop.create_connection(
            lambda: _HTTP(REQUEST, float("inf"), 1), HOST, port, ssl=ctx, server_hostname=HOST
        )
        await p.done
        conns.append((t, p))
    start = time.perf_counter()
    deadline = start + seconds
    for t, p in conns:
        p.count, p.limit, p.deadline = 0, KEEPALIVE_PER_CONN, deadline
        p.done = loop.create_future()
        t.write(REQUEST)
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(p.done for _, p in conns))
    elapsed = time.perf_counter() - start
    for t, _ in conns:
        t.close()
    return sum(p.count for _, p in conns) / elapsed


async def _new_connections(port: int, ctx: ssl.SSLContext, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    deadline = start + seconds
    limit = MAX_REQUESTS // CONNS

    async def one_loop() -> int:
        n = 0
        while n < limit and time.perf_counter() < deadline:
            t, p = await loop.create_connection(
                lambda: _HTTP(REQUEST_CLOSE, 0.0, 1), HOST, port, ssl=ctx, server_hostname=HOST
            )
            await p.done
            t.close()
            n += 1
        return n

    async with asyncio.timeout(seconds + 30):
        counts = await asyncio.gather(*(one_loop() for _ in range(CONNS)))
    return sum(counts) / (time.perf_counter() - start)


async def _echo(port: int, ctx: ssl.SSLContext, seconds: float, chunk: int, window: int) -> float:
    """Echoed bytes/s over ``CONNS`` connections."""
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(CONNS):
        t, p = await loop.create_connection(
            lambda: _Echo(chunk, window, float("inf"), MAX_REQUESTS),
            HOST,
            port,
            ssl=ctx,
            server_hostname=HOST,
        )
        conns.append((t, p))
    await asyncio.sleep(0.05)  # the first windows echo back: warm, untimed
    start = time.perf_counter()
    base = sum(p.got for _, p in conns)
    for _, p in conns:
        p.deadline = start + seconds
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*(p.done for _, p in conns))
    elapsed = time.perf_counter() - start
    for t, _ in conns:
        t.close()
    return (sum(p.got for _, p in conns) - base) / elapsed


@dataclass
class Result:
    """One side's figures."""

    web_keepalive: float  # requests/s
    web_new: float  # requests/s, a new TLS connection each
    tcp_stream: float  # MiB/s echoed
    tcp_pingpong: float  # echoes/s


def _measure_side(ports: Ports, ca_pem: bytes, seconds: float) -> Result:
    ctx = _client_context(ca_pem)

    async def run() -> Result:
        return Result(
            await _keepalive(ports.web, ctx, seconds),
            await _new_connections(ports.web, ctx, seconds),
            await _echo(ports.tcp, ctx, seconds, STREAM_CHUNK, STREAM_WINDOW) / MIB,
            await _echo(ports.tcp, ctx, seconds, PING, PING) / PING,
        )

    loop = new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def measure(srv: Servers, seconds: float, baseline_first: bool = False) -> tuple[Result, Result]:
    """(meta, baseline): one round, each figure over ``seconds``; alternate the order by round."""
    if baseline_first:
        base = _measure_side(srv.base, srv.ca_pem, seconds)
        ours = _measure_side(srv.meta, srv.ca_pem, seconds)
    else:
        ours = _measure_side(srv.meta, srv.ca_pem, seconds)
        base = _measure_side(srv.base, srv.ca_pem, seconds)
    return ours, base


def main() -> None:
    ca = CertificateAuthority.create("meta bench CA")
    with servers(ca.to_pem()) as srv:
        measure(srv, 0.1)  # warm-up
        ours, base = measure(srv, 0.5)
    for field in ("web_keepalive", "web_new", "tcp_stream", "tcp_pingpong"):
        e, b = getattr(ours, field), getattr(base, field)
        print(f"{field:14} meta {e:12,.1f}  direct {b:12,.1f}  ratio {e / b:.2f}")


if __name__ == "__main__":
    main()
