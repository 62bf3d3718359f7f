"""HTTPS for any ASGI 3 application, on the node's certificate manager.

``WebServer`` accepts connections itself, through the same TLS glue as node
acceptors and ``TCPServer`` (``net.tls.ListenerTLS``: the manager's current
certificate, client-auth mode and client CAs for every handshake;
``server_tls_protocol``: a handshake deadline and refusals logged), and hands
each established connection to Hypercorn's per-connection HTTP server, which
speaks HTTP/1.1 (and HTTP/2 over cleartext upgrade). Driving Hypercorn per
connection is what lets the ASGI scope carry that connection's TLS details
(``scope["extensions"]["tls"]``, the ASGI TLS extension), which no ASGI
server fills in from its own accept loop. See ``docs/meta.md``.

``WebHandler`` is an ASGI app that hands each request to an actor as a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import ErgoError, ErrTimeout, NodeError
from ergo_py.gen.meta import AppServer
from ergo_py.gen.node import Node, Target
from ergo_py.gen.types import register_type
from ergo_py.meta._host import MetaProcess
from ergo_py.net.loop import wait_until
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.tls import ListenerTLS, log_refused_handshake, server_tls_protocol
from ergo_py.node.asgi import answer_lifespan, respond

__all__ = [
    "WebHandler",
    "WebHandlerOptions",
    "WebRequest",
    "WebResponse",
    "WebServer",
    "WebServerOptions",
    "serve_app",
]

log = logging.getLogger(__name__)
_limited = LogLimiter(log)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@dataclass
class WebServerOptions:
    """See ``docs/meta.md``.

    ``max_body_size``: larger request bodies get a 413. ``read_timeout``: a
    client that sends nothing for this long is disconnected (a stalled
    request or an idle keep-alive). ``tls_handshake_timeout``: the TLS
    handshake alone.
    """

    host: str = "127.0.0.1"
    port: int = 0
    app: ASGIApp | None = None
    cert_manager: CertManager | None = None
    tls: bool = True
    max_body_size: int = 1024 * 1024
    read_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    tls_handshake_timeout: float = 5.0


def _tls_extension(sslobj: Any) -> dict[str, Any]:
    """The ASGI TLS extension for one connection (https://asgi.readthedocs.io, "TLS")."""
    chain: list[str] = []
    verified = getattr(sslobj, "get_verified_chain", None)  # Python 3.13+
    ders: list[bytes] = []
    if verified is not None:
        with contextlib.suppress(ValueError, ssl.SSLError):
            ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in verified() or ()]  # type: ignore[attr-defined]
    if not ders:
        leaf = sslobj.getpeercert(True)
        ders = [bytes(leaf)] if leaf else []
    chain = [ssl.DER_cert_to_PEM_cert(d) for d in ders]
    name = None
    peer = sslobj.getpeercert() if ders else None
    if peer:
        name = ",".join("=".join(kv) for rdn in peer.get("subject", ()) for kv in rdn)
    cipher = sslobj.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(sslobj.version() or ""),
        "cipher_suite": None,
        "cipher_name": cipher[0] if cipher else None,  # not in the spec: the OpenSSL name
    }


class _BodyTooLarge(Exception):
    pass


class _Limits:
    """Per-request middleware: the body limit (413), the TLS extension, the node."""

    def __init__(self, app: ASGIApp, limit: int, extensions: dict[str, Any]) -> None:
        self.app = app
        self.limit = limit
        self.extensions = extensions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope["extensions"] = {**(scope.get("extensions") or {}), **self.extensions}
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key.lower() == b"content-length":
                with contextlib.suppress(ValueError):
                    if int(value) > self.limit:
                        await _discard_body(receive, _DRAIN_MAX)
                        await respond(send, 413, b"request body too large\n")
                        return
        started = False
        seen = 0

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _discard_body(receive, _DRAIN_MAX)
                await respond(send, 413, b"request body too large\n")


# A refused body is read and dropped, up to this much, before the 413 goes
# out: a server that answers and closes while the client is still sending
# makes the client's TCP stack see a reset, and the client then often never
# reads the answer. Past this, the client sees the reset (it should have
# asked with "Expect: 100-continue").
_DRAIN_MAX = 4 << 20


async def _discard_body(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the request body, at most ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message.get("type") != "http.request":
            return  # the client went away
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class WebServer(MetaProcess, AppServer):
    """An HTTP(S) server meta-process for ``options.app``; ``port``: the bound port."""

    def __init__(self, options: WebServerOptions) -> None:
        super().__init__()
        if options.app is None:
            raise NodeError("WebServerOptions.app is required (an ASGI 3 application)")
        self.options = options
        self.port = 0
        self._tls: ListenerTLS | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[asyncio.Transport] = set()
        self._lifespan: Any = None
        self._lifespan_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<WebServer {self.options.host}:{self.port}>"

    def _start(self) -> None:
        from hypercorn.config import Config

        opts = self.options
        if opts.tls:
            self._tls = ListenerTLS(self._required_cert_manager(opts.cert_manager))
        config = Config()
        config.read_timeout = opts.read_timeout  # type: ignore[assignment]  # float works
        config.keep_alive_timeout = opts.keep_alive_timeout
        config.accesslog = None
        self._config = config
        self._run_or_stop(self._listen(), timeout=15.0)
        log.info("%s: serving %s", self, "HTTPS" if self._tls else "plain HTTP")

    async def _listen(self) -> None:
        from hypercorn.app_wrappers import ASGIWrapper
        from hypercorn.asyncio.lifespan import Lifespan
        from hypercorn.asyncio.worker_context import WorkerContext

        loop = asyncio.get_running_loop()
        assert self.options.app is not None
        self._state: dict[str, Any] = {}
        self._context = WorkerContext(None)
        self._lifespan = Lifespan(
            ASGIWrapper(cast(Any, self.options.app)), self._config, loop, self._state
        )
        self._lifespan_task = loop.create_task(self._lifespan.handle_lifespan())
        await self._lifespan.wait_for_startup()
        self._server = await loop.create_server(
            self._protocol, self.options.host, self.options.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _protocol(self) -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        raw: list[asyncio.Transport] = []  # the TCP transport while in its TLS handshake

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for t in raw:
                self._pending.discard(t)
            task = loop.create_task(self._serve(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        app = asyncio.StreamReaderProtocol(reader, connected, loop=loop)
        if self._tls is None:
            return app

        def started(peer: Any, transport: asyncio.BaseTransport) -> None:
            raw.append(cast(asyncio.Transport, transport))  # uvloop's do not subclass
            self._pending.add(raw[0])

        def failed(peer: Any, exc: BaseException | None) -> None:
            for t in raw:
                self._pending.discard(t)
            log_refused_handshake(_limited, self, peer, exc)

        return server_tls_protocol(
            loop, app, self._tls.context, self.options.tls_handshake_timeout, failed, started
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from hypercorn.app_wrappers import ASGIWrapper
        from hypercorn.asyncio.tcp_server import TCPServer as HypercornConnection

        sslobj = writer.get_extra_info("ssl_object")
        extensions: dict[str, Any] = {"ergo_py": {"node": self.proc.node}}
        if sslobj is not None:
            extensions["tls"] = _tls_extension(sslobj)
        assert self.options.app is not None
        app = ASGIWrapper(
            cast(Any, _Limits(self.options.app, self.options.max_body_size, extensions))
        )
        loop = asyncio.get_running_loop()
        await HypercornConnection(
            app, loop, self._config, self._context, self._state, reader, writer
        )

    def _stop(self, reason: Any) -> None:
        if self._tls is not None:
            self._tls.close()
        with contextlib.suppress(ErgoError):
            self.loop.run(self._shutdown(), timeout=10.0)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._pending):
            t.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await wait_until(asyncio.gather(*tasks, return_exceptions=True), 3.0)
        if self._lifespan is not None:
            with contextlib.suppress(Exception):
                await wait_until(self._lifespan.wait_for_shutdown(), 3.0)
        if self._lifespan_task is not None:
            self._lifespan_task.cancel()
            await wait_until(asyncio.gather(self._lifespan_task, return_exceptions=True), 1.0)
        if self._server is not None:
            await wait_until(self._server.wait_closed(), 1.0)


@register_type
@dataclass(frozen=True)
class WebRequest:
    """One HTTP request, as ``WebHandler`` hands it to its worker.

    ``headers``: (name, value) pairs, names lower-case; ``client_cert``: the
    client's certificate (DER) when it presented one.
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client_cert: bytes | None = None


@register_type
@dataclass(frozen=True)
class WebResponse:
    """What a worker answers a ``WebRequest`` with."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass
class WebHandlerOptions:
    """``worker``: the actor each request goes to; ``request_timeout``: seconds until a 504."""

    worker: Target
    request_timeout: float = 5.0
    node: Node | None = field(default=None)


class WebHandler:
    """An ASGI 3 app handing each request to an actor: ``handle_call(sender, ref, WebRequest)``.

    The call runs on a thread of the loop's executor, not on the loop. A
    worker that does not answer within ``request_timeout`` is a 504; one that
    crashes, or answers something other than a ``WebResponse``, a 500. The
    node is the ``WebServer``'s (or ``options.node``, to serve it elsewhere).
    """

    def __init__(self, options: WebHandlerOptions) -> None:
        self.options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        extensions = scope.get("extensions") or {}
        node = self.options.node or (extensions.get("ergo_py") or {}).get("node")
        if node is None:
            await respond(send, 500, b"no node to hand the request to\n")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        chain = (extensions.get("tls") or {}).get("client_cert_chain") or []
        request = WebRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]),
            body=bytes(body),
            client_cert=ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None,
        )
        timeout = self.options.request_timeout
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(
                None, node.call, self.options.worker, request, timeout
            )
        except ErrTimeout:
            await respond(send, 504, b"the worker did not answer in time\n")
            return
        except Exception as exc:
            log.info(
                "web request %s %s failed in %r: %r",
                request.method,
                request.path,
                self.options.worker,
                exc,
            )
            await respond(send, 500, b"the worker failed\n")
            return
        if not isinstance(response, WebResponse):
            log.info("worker %r answered %r, not a WebResponse", self.options.worker, response)
            await respond(send, 500, b"the worker gave no response\n")
            return
        headers = [
            (str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in response.headers
        ]
        if not any(k.lower() == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": bytes(response.body)})


def serve_app(
    *, host: str, port: int, app: Any, tls: bool, cert_manager: CertManager | None
) -> WebServer:
    """A ``WebServer`` for ``app``: the ``gen.meta.AppServerFactory`` nodes are started with."""
    return WebServer(
        WebServerOptions(host=host, port=port, app=app, tls=tls, cert_manager=cert_manager)
    )
