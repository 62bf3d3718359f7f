"""The embedded registrar's client side: the node's handle, registering or serving.

Election: the first node to bind the registrar port on 127.0.0.1 serves
(``gen.options.DEFAULT_REGISTRAR_PORT``, 4499, unless told otherwise). Every
other node registers over a TCP connection it keeps open: that connection is
the registration's lease, and the server drops the registration when it
closes. When the server goes away, each client retries every
``retry_interval`` seconds, first trying to become the server itself, then
registering with whoever did (failover). Resolution uses a short-lived TCP
request connection; the serving node answers from its own table without I/O.

Names on other hosts (``node@otherhost``) are resolved over UDP, as in Ergo:
a Resolve datagram to ``otherhost`` on the registrar port, answered by the
registrar serving there (its server listens for them on ``resolve_host``,
by default the node's acceptor host). Hidden nodes neither serve nor
register, but may resolve.

Everything here runs on one event loop (the node's); only ``nodes`` may be called
from another thread.
The serving side is :mod:`.server`; the wire format is :mod:`.proto`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from typing import Any, Final

from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoConnection,
    ErrNodeTerminated,
    ErrTimeout,
    ErrUnsupported,
    LocalProtocolError,
    RemoteProtocolError,
)
from ergo_py.gen.options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_REGISTRAR_PORT
from ergo_py.gen.registrar import Route
from ergo_py.net.loop import cancel_and_wait
from ergo_py.net.registrar.proto import (
    DEFAULT_MAX_FRAME_SIZE,
    Message,
    MessageDecoder,
    Register,
    RegisterReply,
    Resolve,
    ResolveReply,
    Unregister,
    encode,
    error_for,
    one_message,
    valid_node_name,
)
from ergo_py.net.registrar.server import CLOSE_TIMEOUT, Limits, _Server
from ergo_py.net.retry import Backoff, retry_until_async

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_RESOLVE_TIMEOUT",
    "DEFAULT_RETRY_INTERVAL",
    "REGISTRAR_HOST",
    "EmbeddedRegistrar",
    "is_local_host",
]

log = logging.getLogger(__name__)

REGISTRAR_HOST: Final = "127.0.0.1"
DEFAULT_RESOLVE_TIMEOUT: Final = 3.0
DEFAULT_RETRY_INTERVAL: Final = 1.0
DEFAULT_FRAME_TIMEOUT: Final = 5.0
DEFAULT_IDLE_TIMEOUT: Final = 10.0
DEFAULT_MAX_CONNECTIONS: Final = 1024
_RESEND_INTERVAL: Final = 0.5


class _ResolveClient(asyncio.DatagramProtocol):
    def __init__(self, reply: asyncio.Future[bytes]) -> None:
        self._reply = reply

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not self._reply.done():
            self._reply.set_result(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        log.debug("registrar: resolve datagram error: %s", exc)


def is_local_host(host: str) -> bool:
    """Whether names on ``host`` register with this host's registrar."""
    return host in _LOCAL_HOSTS or host == socket.gethostname()


_LOCAL_HOSTS: Final = frozenset({"", "localhost", "127.0.0.1", "::1"})


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
    except (TimeoutError, OSError):
        writer.transport.abort()


async def _read_message(
    reader: asyncio.StreamReader,
    decoder: MessageDecoder,
    *,
    idle_timeout: float | None,
    frame_timeout: float,
) -> Message | None:
    """The next message, or None on a clean EOF between frames.

    Waits up to ``idle_timeout`` (None: forever) for a frame to begin and
    ``frame_timeout`` for a begun frame to complete; raises ``gen.ErrTimeout``
    when either runs out and ``gen.RemoteProtocolError`` for malformed bytes
    or an EOF mid-frame.
    """
    loop = asyncio.get_running_loop()
    frame_deadline: float | None = None
    while (message := decoder.next_message()) is None:
        if decoder.buffered:
            if frame_deadline is None:
                frame_deadline = loop.time() + frame_timeout
            timeout: float | None = max(0.0, frame_deadline - loop.time())
        else:
            timeout = idle_timeout
        # asyncio.timeout, not wait_for: on 3.11 wait_for can drop a result
        # that completes while it is being cancelled.
        try:
            async with asyncio.timeout(timeout):
                data = await reader.read(65536)
        except TimeoutError:
            what = "stalled mid-frame" if decoder.buffered else "sent nothing"
            raise ErrTimeout(f"registrar peer {what} for {timeout} s") from None
        if not data:
            if decoder.buffered:
                raise RemoteProtocolError("registrar connection closed mid-frame")
            return None
        decoder.receive_data(data)
    return message


class EmbeddedRegistrar:
    """The node's handle on the host's registrar, serving it or registered with it.

    The default ``net.Registrar``. Lifecycle: ``start`` once (or never: then
    it only resolves), ``resolve`` any number of times, ``close`` once
    (idempotent). It owns the server (when it serves), the lease connection
    and the one background task that watches the lease and fails over;
    ``close`` ends all of them. Every network wait is bounded:
    ``connect_timeout`` per connect, ``resolve_timeout`` per request,
    ``frame_timeout`` per begun frame.
    """

    def __init__(
        self,
        *,
        port: int = DEFAULT_REGISTRAR_PORT,
        host: str = REGISTRAR_HOST,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        resolve_host: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._resolve_host = resolve_host
        self._resolve_timeout = resolve_timeout
        self._connect_timeout = connect_timeout
        self._retry_interval = retry_interval
        self._limits = Limits(max_frame_size, frame_timeout, idle_timeout, max_connections)
        self._node = ""
        self._routes: tuple[Route, ...] = ()
        self._hidden = False
        self._started = False
        self._stopped = False
        self._server: _Server | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lease: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @property
    def port(self) -> int:
        """The registrar's TCP port on this host."""
        return self._port

    @property
    def is_server(self) -> bool:
        """True while this node serves the host's registrar."""
        return self._server is not None

    async def start(self, node_name: str, routes: Sequence[Route], *, hidden: bool = False) -> None:
        """Serve the registrar or register with it; returns once registered.

        Raises ``gen.ErrTaken`` if the name is registered already,
        ``gen.ErrIncorrect`` for a bad name or no routes,
        ``gen.ErrNoConnection``/``gen.ErrTimeout`` if the registrar port is
        held by something that does not answer, ``gen.RemoteProtocolError``
        if it answers nonsense. On error nothing is left running. A hidden
        node (``hidden=True``) neither serves nor registers; ``routes`` are
        then ignored. If the port's holder goes away meanwhile, the election
        is retried every ``retry_interval`` for up to ``resolve_timeout``.
        """
        if self._stopped:
            raise ErrNodeTerminated("registrar is stopped")
        if self._started:
            raise LocalProtocolError("registrar already started")
        if not valid_node_name(node_name):
            raise ErrIncorrect(f"bad node name {node_name!r} (example: node@localhost)")
        routes = () if hidden else Register(node_name, tuple(routes)).routes
        if not hidden and not routes:
            raise ErrIncorrect("a registered node needs at least one route")
        self._node = node_name
        self._hidden = hidden
        self._routes = routes
        self._started = True
        if hidden:
            return
        deadline = asyncio.get_running_loop().time() + self._resolve_timeout
        try:
            # ErrNoConnection: the port was held a moment ago but nobody answers
            # now; a server is going away. Retry the election, bounded.
            lease = await retry_until_async(
                deadline, self._attempt, (ErrNoConnection,), backoff=self._every_interval()
            )
        except BaseException:
            self._started = False
            if self._server is not None:
                server, self._server = self._server, None
                await server.close()
            raise
        if lease is not None:
            self._lease = lease
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"registrar-lease[{node_name}]"
            )

    async def resolve(self, node_name: str) -> list[Route]:
        """The routes ``node_name`` registered (with this host's registrar, or its host's).

        Raises ``gen.ErrNoRoute`` if it is not registered,
        ``gen.ErrNoConnection`` if no registrar could be reached and
        ``gen.ErrTimeout`` if it did not answer, both within
        ``resolve_timeout``; ``gen.ErrIncorrect`` for a bad name. While the
        registrar fails over, resolution retries until the timeout.
        """
        if self._stopped:
            raise ErrNodeTerminated("registrar is stopped")
        Resolve(node_name)  # validates the name
        host = node_name.rpartition("@")[2]
        if not is_local_host(host):
            return await self._resolve_remote(host, node_name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._resolve_timeout
        last: ErrNoConnection | None = None
        backoff = self._every_interval()
        while True:  # not retry_until_async: the server may appear here between tries
            if self._server is not None:
                routes, error = self._server.lookup_code(node_name)
                if error is not None:
                    raise error_for(error, node_name)
                return list(routes)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                reply = await self._request(Resolve(node_name), remaining)
            except ErrNoConnection as exc:
                last = exc
                log.debug("registrar: resolve %s: %s; retrying", node_name, exc)
                await asyncio.sleep(min(backoff.next(), max(0.0, deadline - loop.time())))
                continue
            if not isinstance(reply, ResolveReply):
                raise RemoteProtocolError(f"expected ResolveReply, got {type(reply).__name__}")
            if reply.error is not None:
                raise error_for(reply.error, node_name)
            return list(reply.routes)
        raise ErrNoConnection(f"no registrar reachable on port {self._port}: {last}") from last

    async def _resolve_remote(self, host: str, name: str) -> list[Route]:
        """Ask the registrar on ``host`` over UDP, re-sending until ``resolve_timeout``."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _ResolveClient(reply), remote_addr=(host, self._port)
            )
        except OSError as exc:
            raise ErrNoConnection(f"cannot resolve {name} on {host}: {exc}") from exc
        query = encode(Resolve(name), self._limits.max_frame_size)
        deadline = loop.time() + self._resolve_timeout
        try:
            while not reply.done() and loop.time() < deadline:
                transport.sendto(query)  # datagrams get lost: ask again now and then
                with contextlib.suppress(TimeoutError):
                    wait = min(_RESEND_INTERVAL, max(0.0, deadline - loop.time()))
                    await asyncio.wait_for(asyncio.shield(reply), wait)
        finally:
            transport.close()
        if not reply.done():
            raise ErrTimeout(f"no registrar on {host}:{self._port} answered for {name}")
        message = one_message(reply.result(), self._limits.max_frame_size)
        if not isinstance(message, ResolveReply):
            raise RemoteProtocolError(f"expected ResolveReply, got {type(message).__name__}")
        if message.error is not None:
            raise error_for(message.error, name)
        return list(message.routes)

    def nodes(self) -> list[str]:
        """The nodes registered on this host, sorted, while this node serves the registrar.

        ``gen.ErrUnsupported`` on any other node: the wire protocol has no
        listing, so only the serving node sees the table. Any thread.
        """
        server = self._server
        if server is None:
            raise ErrUnsupported("the embedded registrar lists nodes only where it serves")
        return server.names()

    async def close(self) -> None:
        """End the lease (the server drops our registration), the server and the task.

        Idempotent; after it returns nothing this registrar started is running.
        """
        if self._stopped:
            return
        self._stopped = True
        supervisor, self._supervisor = self._supervisor, None
        await cancel_and_wait(supervisor)
        await self._drop_lease(unregister=True)
        server, self._server = self._server, None
        if server is not None:
            await server.close()

    # internals

    async def _attempt(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """One round of the election: serve (returns None) or register (returns the lease)."""
        server = _Server(
            self._host,
            self._port,
            self._limits,
            resolve_host=self._resolve_host,
        )
        try:
            server.bind()
        except OSError as exc:
            log.debug("registrar: port %d held (%s); registering as a client", self._port, exc)
        else:
            self._server = server
            try:
                await server.start()
            except BaseException:
                self._server = None
                await server.close()
                raise
            server.register_code(self._node, self._routes, None)
            log.info("registrar: %s serves on %s:%d", self._node, self._host, self._port)
            return None
        reader, writer = await self._connect()
        try:
            decoder = MessageDecoder(self._limits.max_frame_size)
            writer.write(encode(Register(self._node, self._routes), self._limits.max_frame_size))
            reply = await _read_message(
                reader,
                decoder,
                idle_timeout=self._resolve_timeout,
                frame_timeout=self._limits.frame_timeout,
            )
            if reply is None:
                raise ErrNoConnection("registrar closed the connection before replying")
            if not isinstance(reply, RegisterReply):
                raise RemoteProtocolError(f"expected RegisterReply, got {type(reply).__name__}")
            if reply.error is not None:
                raise error_for(reply.error, self._node)
        except BaseException:
            await _close_writer(writer)
            raise
        log.info("registrar: %s registered on port %d", self._node, self._port)
        return reader, writer

    async def _connect(
        self, timeout: float | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the registrar port, or ``gen.ErrNoConnection`` in time."""
        if timeout is None:
            timeout = self._connect_timeout
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(self._host, self._port)
        except TimeoutError:
            raise ErrNoConnection(f"connect to registrar port {self._port} timed out") from None
        except OSError as exc:
            raise ErrNoConnection(f"cannot connect to registrar port {self._port}: {exc}") from exc

    async def _request(self, message: Message, timeout: float) -> Message:
        """Send ``message`` on a fresh connection and return the one reply.

        ``gen.ErrNoConnection`` if the registrar cannot be reached or hangs up
        before replying; ``gen.ErrTimeout`` if it is reached but no reply
        arrives within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reader, writer = await self._connect(min(self._connect_timeout, timeout))
        try:
            writer.write(encode(message, self._limits.max_frame_size))
            remaining = max(0.0, deadline - loop.time())
            reply = await _read_message(
                reader,
                MessageDecoder(self._limits.max_frame_size),
                idle_timeout=remaining,
                frame_timeout=min(self._limits.frame_timeout, remaining),
            )
        finally:
            await _close_writer(writer)
        if reply is None:
            raise ErrNoConnection("registrar closed the connection before replying")
        return reply

    def _every_interval(self) -> Backoff:
        """The registrar retries at a steady ``retry_interval``: a server takes over in one."""
        return Backoff(self._retry_interval, self._retry_interval)

    async def _supervise(self) -> None:
        """Watch the lease; when it breaks, fail over until registered or serving again.

        Ends by cancellation (``close``) or by becoming the server. The lease
        itself belongs to the registrar (``self._lease``), so a close that
        cancels this task before it ever ran still closes it.
        """
        while self._lease is not None:
            await self._hold(self._lease[0])
            await self._drop_lease(unregister=False)
            backoff = self._every_interval()
            while not self._stopped:
                await asyncio.sleep(backoff.next())
                try:
                    self._lease = await self._attempt()
                except (ErgoError, OSError) as exc:
                    level = logging.DEBUG if isinstance(exc, ErrNoConnection) else logging.WARNING
                    log.log(level, "registrar: failover attempt for %s: %s", self._node, exc)
                    continue
                break

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        """Return when the lease breaks (server gone, or it broke the protocol)."""
        decoder = MessageDecoder(self._limits.max_frame_size)
        try:
            message = await _read_message(
                reader, decoder, idle_timeout=None, frame_timeout=self._limits.frame_timeout
            )
        except ConnectionError as exc:
            log.info("registrar: server went away (%s); %s fails over", exc, self._node)
            return
        except (ErgoError, OSError) as exc:
            log.warning("registrar: lease of %s broken: %s", self._node, exc)
            return
        if message is None:
            log.info("registrar: server went away; %s fails over", self._node)
        else:
            log.warning(
                "registrar: unexpected %s on the lease of %s", type(message).__name__, self._node
            )

    async def _drop_lease(self, *, unregister: bool) -> None:
        """The one place the lease connection ends; idempotent."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        writer = lease[1]
        if unregister:
            with contextlib.suppress(Exception):
                writer.write(encode(Unregister(self._node), self._limits.max_frame_size))
        await _close_writer(writer)
