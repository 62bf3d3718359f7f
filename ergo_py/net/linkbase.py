"""What a link is in either dialect (ours, ``net/link.py``; Ergo's, ``node/ergo_link.py``).

A link runs a handshake machine under a deadline, then hands what arrives to
its owner; writes go through a :class:`~ergo_py.net.writer.BatchWriter` made
when the handshake is done. The two dialects differ in their machines and in
what they do with the bytes after the handshake; this base holds the rest
once: the TLS details, the handshake deadline, ``ready`` and ``gone``, the
acceptor's "settled" count, the owner's ``link_lost`` (exactly once), and the
ways a link ends (``close``, ``abort``, ``_fail`` with its rate-limited log).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from ergo_py.gen.cert import PeerCertificate
from ergo_py.gen.certmanager import CertState
from ergo_py.gen.errors import ErgoError, ErrNoConnection, HandshakeRejected
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.tls import connection_tls_info
from ergo_py.net.writer import BatchWriter, WriterFlowControl


class TLSDetails:
    """What TLS said about one link: our cert state, the peer's certificate."""

    __slots__ = ("cipher", "local_state", "peer", "peer_der", "version")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.local_state: CertState | None = None
        self.peer_der: bytes | None = None
        self.peer: PeerCertificate | None = None
        self.version: str | None = None
        self.cipher: str | None = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        self.local_state, self.peer_der = connection_tls_info(ssl_object)
        if self.peer_der:
            self.peer = PeerCertificate.from_der(self.peer_der)
        self.version = ssl_object.version()
        cipher = ssl_object.cipher()
        self.cipher = cipher[0] if cipher else None

    @property
    def local_fp(self) -> bytes | None:
        if self.local_state is None:
            return None
        return bytes.fromhex(self.local_state.certificate.fingerprint)

    @property
    def peer_fp(self) -> bytes | None:
        return hashlib.sha256(self.peer_der).digest() if self.peer_der else None


class _Owner(Protocol):
    def link_lost(self, link: Any, exc: BaseException | None) -> None: ...


OwnerT = TypeVar("OwnerT", bound=_Owner)
ResultT = TypeVar("ResultT")


class LinkBase(WriterFlowControl, asyncio.Protocol, Generic[OwnerT, ResultT]):
    """A link from TCP connect to close; ``ready`` resolves when the handshake is done.

    A subclass builds its machine in ``_begin``, feeds it in ``data_received``
    and calls ``_complete`` with its result; ``_handshake_done`` tells the
    owner (an ``ErgoError`` from it refuses the link) and ``_receive`` takes
    what follows the handshake.
    """

    _LOG_NAME: ClassVar[str]  # how its log lines name it
    # In the dialect's own module's logger: a peer can cause these lines as
    # often as it likes.
    _limited: ClassVar[LogLimiter]

    def __init__(
        self,
        owner: OwnerT,
        *,
        dialer: bool,
        handshake_timeout: float,
        settled: Callable[[Any], None] | None,
    ) -> None:
        self._owner = owner
        self.dialer = dialer
        self._handshake_timeout = handshake_timeout
        self._settled = settled
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[ResultT] = self._loop.create_future()
        self.gone: asyncio.Future[None] = self._loop.create_future()  # the transport is closed
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self.writer: BatchWriter | None = None
        self.tls: TLSDetails | None = None
        self.result: ResultT | None = None
        self.peer_address: Any = None
        self.local_address: Any = None
        self.messages_in = 0
        self.messages_out = 0
        self._heard = False  # the peer's first handshake bytes arrived
        self._error: BaseException | None = None
        self._reported = False

    # --- what a dialect adds -----------------------------------------------------------

    def _begin(self) -> bytes:
        """Make the handshake machine (``self.tls`` is known); the first flight to send."""
        raise NotImplementedError

    def _handshake_done(self, result: ResultT) -> None:
        """Tell the owner the link is up (the writer exists); raise ErgoError to refuse it."""
        raise NotImplementedError

    def _receive(self, data: bytes) -> None:
        """Bytes after the handshake."""
        raise NotImplementedError

    def _unexplained_end(self) -> BaseException | None:
        """Why the peer closed, when neither side said (None: it just closed)."""
        return None

    def _timed_out(self) -> None:
        raise NotImplementedError

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        self.peer_address = transport.get_extra_info("peername")
        self.local_address = transport.get_extra_info("sockname")
        self._timer = self._loop.call_later(self._handshake_timeout, self._timed_out)
        try:
            self.tls = TLSDetails(transport)
            first = self._begin()
            if first:
                self._transport.write(first)
        except Exception as exc:
            self._fail(exc)

    def handshake_failed(self, exc: BaseException | None) -> None:
        """The transport's own (TLS) handshake failed: this link never came up."""
        self._settle()
        if not self.ready.done():
            self.ready.set_exception(ErrNoConnection(f"TLS handshake failed: {exc or 'closed'}"))
            self.ready.exception()

    def _settle(self) -> None:
        """The handshake is over, one way or the other (the acceptor's count; once)."""
        settled, self._settled = self._settled, None
        if settled is not None:
            settled(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        if self._timer is not None:
            self._timer.cancel()
        if self.writer is not None:
            self.writer.close()
        reason = self._error or exc
        if reason is None:
            reason = self._unexplained_end()
        if not self.ready.done():
            self.ready.set_exception(
                reason if reason is not None else ErrNoConnection("closed during the handshake")
            )
            self.ready.exception()  # mark retrieved: the owner may not be waiting
        self._gone(reason)

    def _gone(self, reason: BaseException | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        if not self._reported:
            self._reported = True
            self._owner.link_lost(self, reason)

    def _complete(self, result: ResultT, trailing: bytes) -> None:
        assert self._transport is not None
        if self._timer is not None:
            self._timer.cancel()
        self._settle()
        self.result = result
        self.writer = BatchWriter(self._loop, self._transport)
        try:
            self._handshake_done(result)
        except ErgoError as exc:  # the owner refuses it (and logs why, if it matters)
            self._fail(exc, refused_by_us=True)
            return
        if not self.ready.done():
            self.ready.set_result(result)
        if trailing:
            self._receive(trailing)

    # --- ending ------------------------------------------------------------------------

    @property
    def _source(self) -> Any:
        """The peer's host without its port: what log lines are rate-limited by."""
        address = self.peer_address
        return address[0] if isinstance(address, tuple) and address else address

    def _fail(self, exc: BaseException, refused_by_us: bool = False, abort: bool = False) -> None:
        if self._error is None:
            self._error = exc
            quiet = refused_by_us or isinstance(exc, HandshakeRejected)
            level = logging.INFO if quiet else logging.WARNING
            who = "refused" if refused_by_us else "failed"
            key = (self._source, who, type(exc))
            self._limited.log(
                level, key, "%s %s %s: %s", self._LOG_NAME, self.peer_address, who, exc
            )
        if abort:
            self.abort()
        else:
            self.close()

    def close(self) -> None:
        """Close the link gracefully (idempotent); ``link_lost`` follows.

        Frames already accepted by the writer are sent before the close.
        """
        if self.writer is not None:
            self.writer.close(flush=True)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        """Drop the link now: what the writer still holds is lost; ``link_lost`` follows."""
        if self.writer is not None:
            self.writer.close()
        if self._transport is not None:
            self._transport.abort()
