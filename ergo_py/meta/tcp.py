"""TCP meta-processes: a TLS (or plain) TCP server and an outgoing TLS connection.

Bytes become messages: each connection is known by a ``gen.Alias`` (its
``id``); what arrives on it goes to one process as ``MessageTCP(id, data)``
after a ``MessageTCPConnect``, and a ``MessageTCPDisconnect`` ends the story.
A process writes with ``send(id, MessageTCP(id, data))`` and closes with
``send(id, MessageTCPDisconnect(id, None))``.

TLS is the node's: a server serves through ``net.tls.ListenerTLS`` and
``server_tls_protocol`` exactly as node acceptors do (the manager's current
certificate, client-auth mode and client CAs for every handshake, a
handshake deadline, a budget of handshakes by source); a connection dials
with the manager's current client context and root CAs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import ErgoError, ErrIncorrect, ErrNoConnection
from ergo_py.gen.identifiers import Alias
from ergo_py.gen.node import Target
from ergo_py.gen.types import register_type
from ergo_py.meta._host import MetaProcess
from ergo_py.net.loop import wait_until
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.tls import (
    ListenerTLS,
    client_context_for_dial,
    log_refused_handshake,
    server_tls_protocol,
)
from ergo_py.node.acceptor import PreTLSBudget, source_of

__all__ = [
    "MessageTCP",
    "MessageTCPConnect",
    "MessageTCPDisconnect",
    "TCPConnection",
    "TCPConnectionOptions",
    "TCPServer",
    "TCPServerOptions",
]

log = logging.getLogger(__name__)
_limited = LogLimiter(log)  # anyone who can reach the port can cause these lines

DEFAULT_BUFFER_SIZE = 65536
DEFAULT_MAX_QUEUED = 16
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 5.0
CLOSE_TIMEOUT = 2.0


@register_type
@dataclass(frozen=True)
class MessageTCPConnect:
    """A connection is up. ``peer_cert``: the peer's certificate (DER), when it sent one."""

    id: Alias
    remote_addr: str
    local_addr: str
    peer_cert: bytes | None = None


@register_type
@dataclass(frozen=True)
class MessageTCP:
    """Bytes read from connection ``id`` (to a process), or to write to it (from one)."""

    id: Alias
    data: bytes


@register_type
@dataclass(frozen=True)
class MessageTCPDisconnect:
    """Connection ``id`` has closed (``reason`` None: cleanly); sent to it, closes it."""

    id: Alias
    reason: str | None = None


@register_type
@dataclass(frozen=True)
class _StreamClosed:
    """To a TCPConnection from its own loop: the connection is gone, end."""


@dataclass
class TCPServerOptions:
    """See ``docs/meta.md``. ``max_queued``: messages waiting at the connection's
    process beyond which the server stops reading that connection."""

    host: str = "127.0.0.1"
    port: int = 0
    process_pool: Sequence[Target] = ()
    cert_manager: CertManager | None = None
    tls: bool = True
    buffer_size: int = DEFAULT_BUFFER_SIZE
    max_queued: int = DEFAULT_MAX_QUEUED
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    max_pre_tls: int = 256
    max_pre_tls_per_source: int = 32


@dataclass
class TCPConnectionOptions:
    """See ``docs/meta.md``."""

    host: str = "127.0.0.1"
    port: int = 0
    cert_manager: CertManager | None = None
    process: Target | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    tls: bool = True
    buffer_size: int = DEFAULT_BUFFER_SIZE
    max_queued: int = DEFAULT_MAX_QUEUED
    connect_timeout: float = 5.0


def _addr(sockaddr: Any) -> str:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        host = str(sockaddr[0])
        return f"[{host}]:{sockaddr[1]}" if ":" in host else f"{host}:{sockaddr[1]}"
    return str(sockaddr)


def _peer_der(transport: asyncio.BaseTransport) -> bytes | None:
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(True)
    return bytes(der) if der else None


class _Stream(asyncio.Protocol):
    """One connection on the meta loop: reads become messages to ``process``.

    Back-pressure: after handing a read over, if ``process`` has
    ``max_queued`` or more messages waiting, reading pauses until it is
    down to half, polled every few milliseconds while paused. At most
    ``max_queued`` messages of ``buffer_size`` bytes, plus one read, wait for
    it on this connection's account.
    """

    def __init__(self, owner: _Streams) -> None:
        self._owner = owner
        self.transport: asyncio.Transport | None = None
        self.id: Alias | None = None
        self.process: Target | None = None
        self._paused = False
        self._closing = False
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._owner._up(self)

    def data_received(self, data: bytes) -> None:
        if self.id is None or self.process is None:
            return
        size = self._owner.buffer_size
        view = memoryview(data)
        for i in range(0, len(data), size):
            if not self._owner._deliver(self, MessageTCP(self.id, bytes(view[i : i + size]))):
                return
        self._check()

    def _check(self, delay: float = 0.002) -> None:
        if self._closing or self.transport is None:
            return
        queued = self._owner.queued(self.process)
        if not self._paused:
            if queued >= self._owner.max_queued:
                self._paused = True
                self.transport.pause_reading()
            else:
                return
        elif queued <= self._owner.max_queued // 2:
            self._paused = False
            self.transport.resume_reading()
            return
        asyncio.get_running_loop().call_later(delay, self._check, min(delay * 2, 0.05))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self._closing:
            self._closing = True
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if not self.lost.done():
            self.lost.set_result(None)
        self._owner._down(self, exc)


class _Streams(MetaProcess):
    """What a server and a connection share: streams by id, the write path, delivery."""

    buffer_size: int
    max_queued: int

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[Alias, _Stream] = {}

    def queued(self, process: Target | None) -> int:
        return self.host.queued(process) if process is not None else 0

    def _deliver(self, stream: _Stream, message: Any) -> bool:
        """Loop thread: hand ``message`` to the stream's process; False (and close) if gone."""
        assert stream.process is not None
        try:
            self.proc.send(stream.process, message)
        except ErgoError as exc:
            log.info("%s: %r unreachable (%s); closing %r", self, stream.process, exc, stream.id)
            stream.abort()
            return False
        return True

    def _message(self, sender: Any, message: Any) -> None:
        """Actor thread: a process writes to or closes one of our streams."""
        if isinstance(message, MessageTCP | MessageTCPDisconnect):
            stream = self._streams.get(message.id)
            if stream is None:
                log.debug("%s: %r for a closed connection dropped", self, type(message).__name__)
                return
            with contextlib.suppress(ErgoError):
                if isinstance(message, MessageTCP):
                    self.loop.call_soon(stream.write, bytes(message.data))
                else:
                    self.loop.call_soon(stream.close)
            return
        super()._message(sender, message)

    def _up(self, stream: _Stream) -> None:
        raise NotImplementedError

    def _announce(self, stream: _Stream, process: Target, stream_id: Alias) -> None:
        assert stream.transport is not None
        stream.id = stream_id
        stream.process = process
        self._streams[stream_id] = stream
        t = stream.transport
        connect = MessageTCPConnect(
            stream_id,
            _addr(t.get_extra_info("peername")),
            _addr(t.get_extra_info("sockname")),
            _peer_der(t),
        )
        self._deliver(stream, connect)

    def _down(self, stream: _Stream, exc: BaseException | None) -> None:
        sid = stream.id
        if sid is None or self._streams.pop(sid, None) is None:
            return
        reason = None if exc is None else (str(exc) or type(exc).__name__)
        if stream.process is not None:
            with contextlib.suppress(ErgoError):
                self.proc.send(stream.process, MessageTCPDisconnect(sid, reason))
        if sid != self.alias:
            with contextlib.suppress(ErgoError):
                self.proc.delete_alias(sid)

    async def _close_streams(self) -> None:
        streams = list(self._streams.values())
        for s in streams:
            s.close()
        if streams and not await wait_until(
            asyncio.gather(*(s.lost for s in streams)), CLOSE_TIMEOUT
        ):
            for s in streams:
                s.abort()


class TCPServer(_Streams):
    """A TCP server meta-process (see the module docstring); ``port``: the bound port."""

    def __init__(self, options: TCPServerOptions) -> None:
        super().__init__()
        if not options.process_pool:
            raise ErrIncorrect("TCPServerOptions.process_pool is empty")
        if options.buffer_size < 1 or options.max_queued < 1:
            raise ErrIncorrect("buffer_size and max_queued must be at least 1")
        self.options = options
        self.buffer_size = options.buffer_size
        self.max_queued = options.max_queued
        self._pool = itertools.cycle(list(options.process_pool))
        self._tls: ListenerTLS | None = None
        self._server: asyncio.Server | None = None
        self._budget: PreTLSBudget[_Stream] = PreTLSBudget(
            options.max_pre_tls, options.max_pre_tls_per_source
        )
        self._pending: dict[_Stream, asyncio.Transport] = {}
        self.port = 0

    def __repr__(self) -> str:
        return f"<TCPServer {self.options.host}:{self.port}>"

    def _start(self) -> None:
        if self.options.tls:
            self._tls = ListenerTLS(self._required_cert_manager(self.options.cert_manager))
        self._run_or_stop(self._listen(), timeout=10.0)
        log.info("%s: serving (%s)", self, "TLS" if self._tls else "plain TCP")

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        factory = self._tls_protocol if self._tls is not None else lambda: _Stream(self)
        self._server = await loop.create_server(factory, self.options.host, self.options.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _tls_protocol(self) -> asyncio.BaseProtocol:
        assert self._tls is not None
        stream = _Stream(self)
        return server_tls_protocol(
            asyncio.get_running_loop(),
            stream,
            self._tls.context,
            self.options.tls_handshake_timeout,
            lambda peer, exc: self._tls_failed(stream, peer, exc),
            lambda peer, transport: self._tls_started(stream, peer, transport),
        )

    def _tls_started(self, stream: _Stream, peer: Any, transport: asyncio.BaseTransport) -> None:
        self._pending[stream] = cast(asyncio.Transport, transport)  # uvloop's do not subclass
        cut = self._budget.admit(stream, source_of(peer))
        if cut is not None:
            victim, why = cut
            _limited.log(
                logging.INFO, ("cut", source_of(peer)), "%s: dropped a TLS handshake: %s", self, why
            )
            t = self._pending.pop(victim, None)
            if t is not None:
                t.abort()

    def _tls_failed(self, stream: _Stream, peer: Any, exc: BaseException | None) -> None:
        self._budget.release(stream)
        self._pending.pop(stream, None)
        log_refused_handshake(_limited, self, peer, exc)

    def _up(self, stream: _Stream) -> None:
        self._budget.release(stream)
        self._pending.pop(stream, None)
        try:
            sid = self.proc.create_alias()
        except ErgoError:
            stream.abort()  # we are ending
            return
        self._announce(stream, next(self._pool), sid)

    def _stop(self, reason: Any) -> None:
        if self._tls is not None:
            self._tls.close()
        with contextlib.suppress(ErgoError):
            self.loop.run(self._shutdown(), timeout=CLOSE_TIMEOUT + 3.0)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._pending.values()):
            t.abort()
        self._pending.clear()
        self._budget.drain()
        await self._close_streams()
        if self._server is not None:
            await wait_until(self._server.wait_closed(), 1.0)


def _host_matches(der: bytes, name: str) -> bool:
    """Whether certificate ``der`` is for ``name`` (a DNS name, wildcards allowed, or an IP)."""
    try:
        san = (
            x509.load_der_x509_certificate(der)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
    except (ValueError, x509.ExtensionNotFound):
        return False
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    name = name.lower().rstrip(".")
    for dns in san.get_values_for_type(x509.DNSName):
        dns = dns.lower().rstrip(".")
        if dns == name:
            return True
        if dns.startswith("*.") and "." in name and name.split(".", 1)[1] == dns[2:]:
            return True
    return False


class TCPConnection(_Streams):
    """An outgoing TCP connection meta-process; its alias is the connection's ``id``.

    Starting it connects (TLS with the node's client certificate and the
    manager's root CAs, verifying ``server_name``, else the manager's); it
    raises when the connection cannot be made. The meta-process ends when
    the connection closes.
    """

    def __init__(self, options: TCPConnectionOptions) -> None:
        super().__init__()
        if options.process is None:
            raise ErrIncorrect("TCPConnectionOptions.process is required")
        if options.buffer_size < 1 or options.max_queued < 1:
            raise ErrIncorrect("buffer_size and max_queued must be at least 1")
        self.options = options
        self.buffer_size = options.buffer_size
        self.max_queued = options.max_queued
        self._stream: _Stream | None = None

    def __repr__(self) -> str:
        return f"<TCPConnection to {self.options.host}:{self.options.port}>"

    def _start(self) -> None:
        opts = self.options
        ctx: ssl.SSLContext | None = None
        hostname: str | None = None
        if opts.tls:
            cm = self._required_cert_manager(opts.cert_manager)
            ctx, hostname = client_context_for_dial(cm, opts.insecure_skip_verify)
            hostname = opts.server_name or hostname
        self._run_or_stop(self._connect(ctx, hostname), timeout=opts.connect_timeout + 1.0)

    async def _connect(self, ctx: ssl.SSLContext | None, hostname: str | None) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if ctx is not None:
            extra = {"ssl": ctx, "server_hostname": hostname or ""}
        try:
            async with asyncio.timeout(opts.connect_timeout):
                _, stream = await loop.create_connection(
                    lambda: _Stream(self), opts.host, opts.port, **extra
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ErrNoConnection(f"{self}: {exc}") from exc
        self._stream = stream
        if (
            ctx is not None
            and not opts.insecure_skip_verify
            and hostname
            and not ctx.check_hostname
        ):
            der = _peer_der(stream.transport) if stream.transport is not None else None
            if der is None or not _host_matches(der, hostname):
                stream.abort()
                raise ErrNoConnection(f"{self}: the server's certificate is not for {hostname!r}")
        assert self.alias is not None and self.options.process is not None
        self._announce(stream, self.options.process, self.alias)

    def _up(self, stream: _Stream) -> None:
        pass  # announced by _connect, once the name check passed

    def _down(self, stream: _Stream, exc: BaseException | None) -> None:
        super()._down(stream, exc)
        if self.alias is not None:
            with contextlib.suppress(ErgoError):  # the actor ends itself on its own thread
                self.proc.send(self.alias, _StreamClosed())

    def _message(self, sender: Any, message: Any) -> None:
        if isinstance(message, _StreamClosed):
            self.proc.stop()
            return
        super()._message(sender, message)

    def _stop(self, reason: Any) -> None:
        with contextlib.suppress(ErgoError):
            self.loop.run(self._close_streams(), timeout=CLOSE_TIMEOUT + 1.0)
