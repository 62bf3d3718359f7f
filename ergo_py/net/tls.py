"""TLS glue between a certificate manager and sockets.

The listener keeps one ``ssl.SSLContext`` for its whole life; its
``sni_callback`` (which OpenSSL runs for every handshake, SNI or not) swaps the
connection over to the manager's current server context, so rotation needs
no listener restart. OpenSSL takes ``verify_mode`` from the listener context,
not the swapped one, so the listener follows the manager's client-auth mode
through a subscription. The CA store and the certificate come from the
swapped context.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ergo_py.gen.certmanager import CertManager, CertState, cert_state_of, verify_mode_for
from ergo_py.gen.errors import ErrIncorrect, ErrNoConnection
from ergo_py.net.ratelog import LogLimiter

__all__ = [
    "ListenerTLS",
    "client_context_for_dial",
    "connection_tls_info",
    "dial_tls",
    "log_refused_handshake",
    "server_tls_protocol",
]

log = logging.getLogger(__name__)


class _HasContext(Protocol):
    @property
    def context(self) -> ssl.SSLContext: ...

    def getpeercert(self, binary_form: bool = ...) -> Any: ...


class ListenerTLS(contextlib.AbstractContextManager["ListenerTLS"]):
    """The TLS side of one listener, following ``manager`` live.

    Wrap accepted sockets with :attr:`context` (``server_side=True``). A
    certificate, CA or client-auth change made before a handshake starts
    applies to it: the setter returns only after the listener follows.
    Call :meth:`close` when the listener stops.
    """

    def __init__(self, manager: CertManager) -> None:
        if not isinstance(manager, CertManager):
            raise ErrIncorrect(f"ListenerTLS needs a CertManager, got {type(manager).__name__}")
        self._manager = manager
        self._lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # No resumption, which could bypass a later CA or client-auth change.
        # TLS 1.3 resumes only with tickets (none are issued). TLS 1.2 also
        # resumes by session ID from this context's cache, which outlives
        # every change (the per-state contexts are swapped in later) and which
        # Python cannot turn off: so TLS 1.2 is not served at all. Every
        # client ergo_py makes speaks 1.3.
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
        ctx.sni_callback = self._sni
        self._context = ctx
        self._closed = False
        self._unsubscribe = manager.subscribe(self._on_change)
        self._sync()

    @property
    def context(self) -> ssl.SSLContext:
        """The listener context; wrap accepted sockets with it."""
        return self._context

    @property
    def manager(self) -> CertManager:
        return self._manager

    def close(self) -> None:
        """Stop following the manager (idempotent). Accepted connections are unaffected."""
        with self._lock:
            self._closed = True
        self._unsubscribe()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sni(self, ssl_obj: Any, server_name: str | None, listener: ssl.SSLContext) -> None:
        # Runs inside the ClientHello on the handshaking thread; never raise.
        ssl_obj.context = self._manager.server_context()

    def _on_change(self, _state: CertState) -> None:
        # Runs on the thread that changed the manager, before its setter
        # returns. Writing verify_mode holds the GIL, as does creating an SSL
        # object (which copies it), so each new connection sees one mode.
        self._sync()

    def _sync(self) -> None:
        # Re-read the manager rather than trusting the notified state:
        # notifications from concurrent changes may arrive out of order.
        with self._lock:
            if self._closed:
                return
            mode = verify_mode_for(self._manager.state().client_auth)
            if self._context.verify_mode != mode:
                self._context.verify_mode = mode
                log.debug("listener verify mode now %s", mode.name)


def client_context_for_dial(
    manager: CertManager, insecure_skip_verify: bool
) -> tuple[ssl.SSLContext, str | None]:
    """The cached client context and the ``server_hostname`` to dial with.

    The name is the manager's server name from the same state the context was
    built from (None when empty: no SNI, no hostname check).
    """
    ctx = manager.client_context(insecure_skip_verify)
    state = cert_state_of(ctx)
    name = state.server_name if state is not None else ""
    return ctx, (name or None)


def dial_tls(
    manager: CertManager | None,
    insecure_skip_verify: bool,
    use_tls: bool,
    server_hostname: str,
    peer: str,
) -> tuple[ssl.SSLContext | None, str | None]:
    """What a node's dial to ``peer`` passes as ``ssl`` and ``server_hostname``.

    (None, None) for plain TCP; else the manager's current client context and
    its server name, or ``server_hostname`` when it has none.
    ``ErrNoConnection`` when TLS is wanted but the node has no cert manager.
    """
    if not use_tls:
        return None, None
    if manager is None:
        raise ErrNoConnection(f"{peer} speaks TLS but this node has no cert manager")
    ctx, name = client_context_for_dial(manager, insecure_skip_verify)
    return ctx, name or server_hostname


def connection_tls_info(ssl_object: _HasContext | Any) -> tuple[CertState | None, bytes | None]:
    """After a handshake: the manager state this connection was made with, and the peer DER.

    Works for ``ssl.SSLSocket``, ``ssl.SSLObject`` and their internal
    ``_sslobj``. The state is None for a context no manager built.
    """
    try:
        ctx = ssl_object.context
    except AttributeError:
        return None, None
    state = cert_state_of(ctx) if isinstance(ctx, ssl.SSLContext) else None
    try:
        der = ssl_object.getpeercert(True)
    except (ValueError, OSError, AttributeError):
        der = None
    return state, (bytes(der) if der else None)


class _ReportingServerTLS:
    """Server-side TLS that reports a handshake that fails (mixed into a loop's SSLProtocol).

    ``create_server(ssl=...)`` drops a failed server handshake quietly (logged
    only in debug mode) and never tells the protocol it was created for. We
    need both: the refusal in the log with its reason (a client certificate
    from an unknown CA, expired, missing), and the acceptor's count of
    handshakes under way released, or refused clients would use it up and
    leave the acceptor answering "busy" to everyone. So the acceptor serves
    plain TCP and wraps each connection in this protocol itself.
    ``on_failure(peer_address, exc)`` runs on the loop when the connection
    ends before its TLS handshake completed, whoever ended it (the client, the
    handshake deadline, or our own ``abort()`` of the transport).
    ``on_start(peer_address, transport)``, if given, runs once the connection
    is accepted and its handshake started: the acceptor's admission control,
    which may ``abort()`` this or another pending transport. The outcome comes
    through the public ``waiter`` of the SSL protocol, so the same code runs
    on asyncio's pure-Python TLS layer and on uvloop's native one (tens of
    microseconds less per read and write on every frame after the handshake).
    """

    _ergo_waiter: asyncio.Future[None]
    _ergo_on_failure: Callable[[Any, BaseException | None], None] | None
    _ergo_on_start: Callable[[Any, asyncio.BaseTransport], None] | None
    _ergo_peer: Any = None

    def _ergo_bind(
        self,
        waiter: asyncio.Future[None],
        on_failure: Callable[[Any, BaseException | None], None],
        on_start: Callable[[Any, asyncio.BaseTransport], None] | None,
    ) -> None:
        """Attach the hooks, right after construction (the SSL protocol's own
        ``__init__``, given ``waiter``) and before the loop connects it."""
        self._ergo_waiter = waiter
        self._ergo_on_failure = on_failure
        self._ergo_on_start = on_start
        waiter.add_done_callback(self._ergo_settled)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ergo_peer = transport.get_extra_info("peername")
        super().connection_made(transport)  # type: ignore[misc]
        start, self._ergo_on_start = self._ergo_on_start, None
        if start is not None:
            start(self._ergo_peer, transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        # Both TLS layers wake the waiter with ``exc`` here, which is None when
        # our side aborted the transport: that would read as a handshake that
        # succeeded. Whether it had is known only before.
        pending = not self._ergo_waiter.done()
        super().connection_lost(exc)  # type: ignore[misc]
        if pending:  # gone before the handshake finished
            if not self._ergo_waiter.done():
                self._ergo_waiter.cancel()
            self._ergo_report(exc or ConnectionResetError("closed during the TLS handshake"))

    def _ergo_settled(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            return
        exc = waiter.exception()
        if exc is None:
            self._ergo_on_failure = None  # up: the app protocol reports from here on
        else:
            self._ergo_report(exc)

    def _ergo_report(self, exc: BaseException) -> None:
        report, self._ergo_on_failure = self._ergo_on_failure, None
        if report is not None:
            report(self._ergo_peer, exc)


class _AsyncioServerTLS(_ReportingServerTLS, asyncio.sslproto.SSLProtocol):
    pass


_server_tls_classes: dict[type, type] = {}


def server_tls_protocol(
    loop: asyncio.AbstractEventLoop,
    app: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    handshake_timeout: float,
    on_failure: Callable[[Any, BaseException | None], None],
    on_start: Callable[[Any, asyncio.BaseTransport], None] | None = None,
) -> asyncio.BaseProtocol:
    """The server TLS protocol for an accepted connection, native to ``loop``'s kind.

    ``handshake_timeout`` bounds the TLS handshake alone, from the accept on.
    """
    cls = _server_tls_classes.get(type(loop))
    if cls is None:
        cls = _AsyncioServerTLS
        if type(loop).__module__.startswith("uvloop"):
            import uvloop.loop

            base: type = uvloop.loop.SSLProtocol  # type: ignore[attr-defined]  # not in its stubs
            cls = type("_UvloopServerTLS", (_ReportingServerTLS, base), {})
        _server_tls_classes[type(loop)] = cls
    waiter = loop.create_future()
    protocol = cls(
        loop, app, context, waiter, server_side=True, ssl_handshake_timeout=handshake_timeout
    )
    protocol._ergo_bind(waiter, on_failure, on_start)
    made: asyncio.BaseProtocol = protocol  # cls is chosen at run time: typed here
    return made


def log_refused_handshake(
    limited: LogLimiter, server: object, peer: Any, exc: BaseException | None
) -> None:
    """Log (rate-limited per source address, at INFO) a TLS handshake a server refused.

    For ``server_tls_protocol``'s ``on_failure``: anyone who can reach the
    port can cause these lines, so one source cannot flood the log.
    """
    why = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
    source = peer[0] if isinstance(peer, tuple) and peer else peer
    limited.log(
        logging.INFO,
        ("refused", source),
        "%s: refused a TLS handshake from %s: %s",
        server,
        peer,
        why,
    )
