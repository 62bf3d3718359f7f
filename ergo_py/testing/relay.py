"""A TCP relay with a fault knob: slow or stalled links, and ports across namespaces.

The kernel here has no ``netem`` (no ``tc qdisc ... delay``), so the faults
a blackhole route cannot make are made in user space: a node dials the
relay instead of its peer (``Cluster`` points the node's static route at
it), and the relay passes the bytes on, each chunk held ``delay`` seconds
(one way; a call's round trip grows by twice that) or, while ``stall()``ed,
not at all: nothing is lost, no FIN or RST is sent, the senders' windows
fill up, exactly what keepalive has to notice. ``unstall()`` lets what was
held through, in order.

The listening socket and the sockets towards the target may live in
different network namespaces (:func:`ergo_py.testing.netns.socket_in`): a
relay listening in the test's namespace and dialling into a node's is how
a netns node's ``/metrics`` and observer reach the test.

One :class:`~ergo_py.net.loop.LoopThread` per relay owns every socket and
task; ``close()`` aborts the connections through it and ends the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from ergo_py.gen.errors import ErrIncorrect
from ergo_py.net.loop import LoopThread
from ergo_py.testing.netns import socket_in

__all__ = ["Relay"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # towards the target, once the link flows
_CHUNK = 65536
_HELD = 256  # chunks queued per direction before the relay stops reading (backpressure)
_ABORT = None  # queued in place of data: the source reset, abort the other side


Target = tuple[str, int]


class Relay:
    """Listens on ``host`` (port: :attr:`port`, ephemeral); relays each connection to ``target``.

    ``target``: ``(host, port)``, or a function returning it (called, off the
    relay's loop, for each new connection: a node restarted on another port
    is found). ``listen_netns`` / ``target_netns``: the namespaces the
    listening and the outgoing sockets are made in (None: the caller's).
    Thread-safe: ``set_delay``, ``stall`` and ``unstall`` take effect for
    bytes not yet passed on, in every connection.
    """

    def __init__(
        self,
        target: Target | Callable[[], Target],
        *,
        host: str = "127.0.0.1",
        listen_netns: str | None = None,
        target_netns: str | None = None,
        name: str = "relay",
    ) -> None:
        self.target = target
        """What it was given: ``(host, port)`` or the function."""
        self._target = target if callable(target) else (lambda: target)
        self._target_netns = target_netns
        self._delay = 0.0
        self._stalled = False
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        """How many connections the relay has passed on (made towards the target)."""
        listener = socket_in(listen_netns)
        try:
            listener.bind((host, 0))
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self.host: str = host
        self.port: int = listener.getsockname()[1]
        self._lt = LoopThread(f"relay {name}")
        try:
            self._flowing, self._server = self._lt.run(self._listen(listener), 10.0)
        except BaseException:
            listener.close()
            self._lt.stop()
            raise

    async def _listen(self, listener: socket.socket) -> tuple[asyncio.Event, asyncio.Server]:
        flowing = asyncio.Event()
        flowing.set()
        server = await asyncio.start_server(self._serve, sock=listener)
        return flowing, server

    # -- the knobs (any thread)

    @property
    def delay(self) -> float:
        return self._delay

    def set_delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before passing it on (each way; 0: none)."""
        if not seconds >= 0:
            raise ErrIncorrect(f"delay must be >= 0, not {seconds!r}")
        self._delay = float(seconds)

    @property
    def stalled(self) -> bool:
        return self._stalled

    def stall(self) -> None:
        """Pass nothing on (both ways, new connections included) until :meth:`unstall`."""
        self._stalled = True
        self._lt.call_soon(self._flowing.clear)

    def unstall(self) -> None:
        """Let what was held through, in order, and what follows."""
        self._stalled = False
        self._lt.call_soon(self._flowing.set)

    def close(self) -> None:
        """Abort every connection through the relay and end its thread (idempotent)."""
        self._lt.stop(self._close)

    async def _close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    # -- the loop thread

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a stalled link does not even pass the SYN on
            host, port = await asyncio.to_thread(self._target)
            sock = await asyncio.to_thread(socket_in, self._target_netns)
            sock.setblocking(False)
            try:
                loop = asyncio.get_running_loop()
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), CONNECT_TIMEOUT)
            except BaseException:
                sock.close()
                raise
            up_reader, up = await asyncio.open_connection(sock=sock)
            self._writers.add(up)
            self.connections += 1
            pumps = [
                self._lt.spawn(self._pump(reader, up)),
                self._lt.spawn(self._pump(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in pumps:
                    task.cancel()
        except (OSError, TimeoutError, EOFError) as exc:
            log.debug("relay to %s: %s", self._target_desc(), exc)
        except Exception:
            log.exception("relay to %s failed", self._target_desc())
        finally:
            for w in (writer, up):
                if w is not None:
                    w.transport.abort()
                    self._writers.discard(w)

    def _target_desc(self) -> str:
        with contextlib.suppress(Exception):
            host, port = self._target()
            return f"{host}:{port}"
        return "?"

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: read as it comes, write each chunk once due and the link flows."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(_HELD)

        async def read() -> None:
            try:
                while True:
                    data = await reader.read(_CHUNK)
                    await held.put((loop.time() + self._delay, data))
                    if not data:
                        return
            except (OSError, EOFError):
                await held.put((loop.time() + self._delay, _ABORT))

        feeder = self._lt.spawn(read())
        try:
            while True:
                due, data = await held.get()
                while True:
                    await self._flowing.wait()
                    wait = due - loop.time()
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                if data is _ABORT:
                    raise ConnectionResetError("the other side reset")
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            feeder.cancel()

    def __repr__(self) -> str:
        state = "stalled" if self._stalled else f"delay {self._delay}s"
        return f"Relay({self.host}:{self.port} -> {self._target_desc()}, {state})"
