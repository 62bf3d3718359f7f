"""The serving side of the embedded registrar: the table, the TCP service, the UDP answers.

One node per host runs a ``_Server`` (the client side, :mod:`.client`, decides
which, by binding the port first). It holds the table of registered nodes;
each registration belongs to the TCP connection it arrived on (its lease) and
goes when that connection closes. ``_ResolveService`` answers Resolve
datagrams from other hosts with the same table.

Everything here runs on one event loop (the node's); only ``_Server.names`` may be
called from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from ergo_py.gen.errors import ErgoError, ErrTimeout, ErrTooLarge, RemoteProtocolError
from ergo_py.gen.registrar import Route
from ergo_py.net.registrar.proto import (
    ERROR_INCORRECT,
    ERROR_NO_ROUTE,
    ERROR_TAKEN,
    Message,
    MessageDecoder,
    Register,
    RegisterReply,
    Resolve,
    ResolveReply,
    Unregister,
    encode,
    one_message,
    valid_node_name,
)

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 1.0
"""How long closing waits for connections to go before it stops waiting."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds a registrar serves by: the client (``EmbeddedRegistrar``) is made
    with them and hands them to the ``_Server`` it becomes when it wins the port."""

    max_frame_size: int
    frame_timeout: float  # a begun frame must be complete within it (seconds)
    idle_timeout: float  # a connection without a registration may idle this long
    max_connections: int


class _ServerConnection(asyncio.Protocol):
    """One accepted client: a thin shell moving bytes between socket and decoder.

    Owns its transport and its timer; the transport's ``connection_lost`` is
    the one place both end and the connection's registration is dropped.
    """

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._decoder = MessageDecoder(server.limits.max_frame_size)
        self._registered: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._closed = False
        self.peer = "?"

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.peer = str(transport.get_extra_info("peername"))
        if not self._server._admit(self):
            self._closed = True
            self._transport.abort()
            return
        self._rearm()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._decoder.receive_data(data)
            while (message := self._decoder.next_message()) is not None:
                self._dispatch(message)
                if self._closed:
                    return
        except ErgoError as exc:
            self.fail(exc)
            return
        self._rearm()

    def eof_received(self) -> bool | None:
        if self._decoder.buffered and not self._closed:
            self.fail(RemoteProtocolError("connection closed mid-frame"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        self._server._forget(self, self._registered)
        self._registered = None

    # behaviour

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, Resolve):
            routes, error = self._server.lookup_code(message.node)
            self._send(ResolveReply(routes, error))
        elif isinstance(message, Register):
            if self._registered is not None:
                raise RemoteProtocolError(
                    f"second Register ({message.node!r}) on the connection of {self._registered!r}"
                )
            error = self._server.register_code(message.node, message.routes, self)
            self._send(RegisterReply(error))
            if error is None:
                self._registered = message.node
                log.info("registrar: registered %s from %s", message.node, self.peer)
        elif isinstance(message, Unregister):
            if message.node != self._registered:
                raise RemoteProtocolError(
                    f"Unregister of {message.node!r} on a connection that registered "
                    f"{self._registered!r}"
                )
            log.info("registrar: %s unregistered", message.node)
            self.close()
        else:
            raise RemoteProtocolError(f"unexpected {type(message).__name__} from a client")

    def _send(self, message: Message) -> None:
        assert self._transport is not None
        self._transport.write(encode(message, self._server.limits.max_frame_size))
        if self._transport.get_write_buffer_size() > 4 * self._server.limits.max_frame_size:
            raise RemoteProtocolError("client does not read its replies")

    def fail(self, exc: ErgoError) -> None:
        """Log why and drop the connection at once (its registration goes with it)."""
        if self._closed:
            return
        log.warning(
            "registrar: closing connection from %s: %s: %s", self.peer, type(exc).__name__, exc
        )
        self._closed = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    def close(self, *, abort: bool = False) -> None:
        """Close: politely (pending replies flushed first) or, with ``abort``, at once."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()

    # timers: a started frame must complete within frame_timeout (from its
    # first byte); a connection without a registration may idle idle_timeout.

    def _rearm(self) -> None:
        if self._decoder.buffered:
            if self._timer_kind != "frame":
                self._set_timer("frame", self._server.limits.frame_timeout, self._on_stall)
        elif self._registered is None:
            self._set_timer("idle", self._server.limits.idle_timeout, self._on_idle)
        else:
            self._cancel_timer()

    def _set_timer(self, kind: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer_kind = kind
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_kind = ""

    def _on_stall(self) -> None:
        self._timer = None
        self.fail(ErrTimeout(f"client stalled mid-frame for {self._server.limits.frame_timeout} s"))

    def _on_idle(self) -> None:
        self._timer = None
        log.debug("registrar: closing idle connection from %s", self.peer)
        self.close()


class _Server:
    """The registrar service: the listening socket, the table, every connection.

    ``bind`` takes the port synchronously (``OSError`` if another node holds
    it); ``start`` begins accepting; ``close`` ends the listener and every
    connection and is idempotent.
    """

    def __init__(
        self,
        host: str,
        port: int,
        limits: Limits,
        *,
        resolve_host: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits
        self.resolve_host = resolve_host
        self._udp: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._entries: dict[str, tuple[tuple[Route, ...], _ServerConnection | None]] = {}
        self._closing = False

    def bind(self) -> None:
        """Take the port now (no await, so no cancellation can leak the socket)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR lets a new server take over a port whose old
            # connections linger in TIME_WAIT; on Linux and BSD it does not
            # let two sockets listen on one port.
            # On Windows SO_REUSEADDR would let a second server steal the
            # port; SO_EXCLUSIVEADDRUSE is the safe equivalent there.
            exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
            if exclusive is not None:
                sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    async def start(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        # With a ready socket and start_serving=False this never suspends, so
        # the Server object always reaches self before any cancellation can.
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), sock=self._sock, start_serving=False
        )
        self._sock = None
        await self._server.start_serving()
        if self.resolve_host:
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _ResolveService(self), local_addr=(self.resolve_host, self.port)
                )
            except OSError as exc:
                log.warning(
                    "registrar: cannot answer resolutions from other hosts on %s:%d: %s",
                    self.resolve_host,
                    self.port,
                    exc,
                )

    async def close(self) -> None:
        self._closing = True
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close(abort=True)
        # connection_lost runs on a later loop turn; wait for it, bounded.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        while self._connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)
            self._server = None
        self._entries.clear()

    # connection bookkeeping

    def _admit(self, conn: _ServerConnection) -> bool:
        if self._closing:
            return False
        if len(self._connections) >= self.limits.max_connections:
            log.warning(
                "registrar: refusing connection from %s: %d connections open",
                conn.peer,
                len(self._connections),
            )
            return False
        self._connections.add(conn)
        return True

    def _forget(self, conn: _ServerConnection, registered: str | None) -> None:
        self._connections.discard(conn)
        if registered is not None:
            entry = self._entries.get(registered)
            if entry is not None and entry[1] is conn:
                del self._entries[registered]
                log.info("registrar: lease of %s ended; registration dropped", registered)

    # the table

    def register_code(
        self, node: str, routes: tuple[Route, ...], owner: _ServerConnection | None
    ) -> str | None:
        """Add ``node``; the error code (taken, incorrect) or None on success."""
        if not routes or not valid_node_name(node):
            return ERROR_INCORRECT
        if node in self._entries:
            return ERROR_TAKEN
        self._entries[node] = (routes, owner)
        return None

    def names(self) -> list[str]:
        """The registered node names, sorted (a copy: safe from any thread)."""
        return sorted(self._entries.copy())

    def lookup_code(self, node: str) -> tuple[tuple[Route, ...], str | None]:
        entry = self._entries.get(node)
        if entry is None:
            return (), ERROR_NO_ROUTE
        return entry[0], None


class _ResolveService(asyncio.DatagramProtocol):
    """Answers Resolve datagrams from other hosts with the server's table."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            message = one_message(data, self._server.limits.max_frame_size)
        except (RemoteProtocolError, ErrTooLarge) as exc:
            # Anyone can send a datagram: no reply, and only a debug line,
            # so that junk cannot flood the log.
            log.debug("registrar: bad resolve datagram from %s: %s", addr, exc)
            return
        if not isinstance(message, Resolve):
            log.debug("registrar: %s datagram from %s ignored", type(message).__name__, addr)
            return
        routes, error = self._server.lookup_code(message.node)
        if self._transport is not None:
            self._transport.sendto(encode(ResolveReply(routes, error)), addr)
