"""The physical ceiling: raw asyncio TLS with length-prefixed msgpack frames.

Used as the baseline that ergo_py's network figures are divided by, measured in
the same run on the same machine. The server runs in a separate OS process.

Three figures:
- one-way frames/s (63-byte msgpack messages, writes coalesced the way a
  batching writer would: everything queued since the last flush in one write);
- request/response round trip (one frame out, one back), p50 / p99 in µs;
- mTLS connection set-up rate (new connection + TLS handshake + one
  request/response), per second.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import ssl
import statistics
import struct
import time
from dataclasses import dataclass
from typing import Any

import msgpack

_LEN = struct.Struct(">I")
MESSAGE = ("msg", 12345, b"x" * 32, {"k": 1})


@dataclass(frozen=True)
class TLSMaterial:
    """PEM material for both ends (test certificates only)."""

    ca_pem: bytes
    server: tuple[bytes, bytes]
    client: tuple[bytes, bytes]

    @classmethod
    def issued_by(cls, ca: Any, host: str) -> TLSMaterial:
        """Server and client certificates for ``host`` from ``ca`` (a CertificateAuthority)."""
        return cls(
            ca_pem=ca.pool().to_pem().encode(),
            server=ca.issue(f"server@{host}", hosts=(host,)).to_pem(),
            client=ca.issue(f"client@{host}", hosts=(host,)).to_pem(),
        )


def _context(material: TLSMaterial, server_side: bool) -> ssl.SSLContext:
    from ergo_py import gen

    cert_pem, key_pem = material.server if server_side else material.client
    manager = gen.create_cert_auth_manager(gen.Certificate.from_pem(cert_pem, key_pem))
    pool = gen.CertPool.from_pem(material.ca_pem)
    manager.set_client_cas(pool)
    manager.set_root_cas(pool)
    manager.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    return manager.server_context() if server_side else manager.client_context(False)


class _Server(asyncio.Protocol):
    """Counts one-way frames; answers each request frame (a list) at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        self.buf = bytearray()
        self.count = 0

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        out = []
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if len(buf) - pos - 4 < n:
                break
            body = bytes(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            msg = msgpack.unpackb(body)
            if isinstance(msg, list) and msg and msg[0] == "req":
                out.append(_frame(["rep", msg[1]]))
            elif msg == "count?":
                out.append(_frame(self.count))
                self.count = 0
            else:
                self.count += 1
        del buf[:pos]
        if out:
            self.t.write(b"".join(out))


def _frame(obj: Any) -> bytes:
    body = msgpack.packb(obj)
    return _LEN.pack(len(body)) + body


def _serve(material: TLSMaterial, port_q: Any, stop_ev: Any) -> None:
    async def main() -> None:
        ctx = _context(material, server_side=True)
        server = await asyncio.get_running_loop().create_server(_Server, "127.0.0.1", 0, ssl=ctx)
        port_q.put(server.sockets[0].getsockname()[1])
        while not stop_ev.is_set():
            await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf, 0)
            if len(self.buf) - 4 < n:
                return
            msg = msgpack.unpackb(bytes(self.buf[4 : 4 + n]))
            del self.buf[: 4 + n]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(msg)

    async def request(self, obj: Any) -> Any:
        self.waiter = asyncio.get_running_loop().create_future()
        self.t.write(_frame(obj))
        return await self.waiter


async def _connect(port: int, ctx: ssl.SSLContext) -> _Client:
    _, proto = await asyncio.get_running_loop().create_connection(
        _Client, "127.0.0.1", port, ssl=ctx, server_hostname=None
    )
    return proto


async def _one_way(port: int, ctx: ssl.SSLContext, n: int, batch: int) -> float:
    client = await _connect(port, ctx)
    start = time.perf_counter()
    sent = 0
    while sent < n:
        k = min(batch, n - sent)
        # Encode each message separately, as a batching writer would, then one write.
        client.t.write(b"".join(_frame(MESSAGE) for _ in range(k)))
        sent += k
        if client.t.get_write_buffer_size() > 1 << 20:
            await asyncio.sleep(0)
            while client.t.get_write_buffer_size() > 1 << 18:
                await asyncio.sleep(0.001)
    got = await client.request("count?")
    elapsed = time.perf_counter() - start
    client.t.close()
    assert got == n, (got, n)
    return n / elapsed


async def _rtt(port: int, ctx: ssl.SSLContext, n: int) -> list[float]:
    client = await _connect(port, ctx)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await client.request(["req", i])
        samples.append((time.perf_counter() - t0) * 1e6)
    client.t.close()
    return samples


async def _setup_rate(port: int, ctx: ssl.SSLContext, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        client = await _connect(port, ctx)
        await client.request(["req", i])
        client.t.close()
    return n / (time.perf_counter() - start)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class BaselineResult:
    one_way_per_s: float
    rtt_p50_us: float
    rtt_p99_us: float
    setups_per_s: float


def measure(
    material: TLSMaterial,
    messages: int = 200_000,
    batch: int = 64,
    rtts: int = 2_000,
    setups: int = 100,
) -> BaselineResult:
    """One round of all three figures against a server in another process."""
    ctx_mp = mp.get_context("spawn")
    port_q = ctx_mp.Queue()
    stop_ev = ctx_mp.Event()
    proc = ctx_mp.Process(target=_serve, args=(material, port_q, stop_ev), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=30)
        ctx = _context(material, server_side=False)

        async def run() -> BaselineResult:
            rate = await _one_way(port, ctx, messages, batch)
            samples = await _rtt(port, ctx, rtts)
            setup = await _setup_rate(port, ctx, setups)
            return BaselineResult(
                rate, statistics.median(samples), percentile(samples, 0.99), setup
            )

        return asyncio.run(run())
    finally:
        stop_ev.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
