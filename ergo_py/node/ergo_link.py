"""One TCP (or TLS) link in Ergo's own dialect: the asyncio glue around EHS and ENP.

The link runs the handshake machine (``net/ergo/handshake.py``) until it
yields a result, hands that to its owner (``link_up``), then cuts what
arrives into packets and hands each, decoded, to the owner (``link_event``).
A packet whose body cannot be decoded is logged and skipped (its framing is
intact, as Ergo does); broken framing closes the link. Writes come from any
thread through a :class:`~ergo_py.net.writer.BatchWriter`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from cryptography.hazmat.primitives import serialization

from ergo_py.gen.errors import (
    ErgoError,
    ErrNoConnection,
    ErrTimeout,
    ErrTooLarge,
    HandshakeRejected,
    ProtocolError,
    RemoteProtocolError,
)
from ergo_py.net.ergo import enp
from ergo_py.net.ergo.handshake import (
    COOKIE_HINT,
    AcceptorMachine,
    DialerMachine,
    Established,
    Joined,
    JoinMachine,
)
from ergo_py.net.link import TLSDetails
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.writer import BatchWriter, WriterFlowControl

log = logging.getLogger(__name__)
_limited = LogLimiter(log)

Machine = DialerMachine | AcceptorMachine | JoinMachine
MachineFactory = Callable[["ErgoLink"], Machine]


class ErgoLinkOwner(Protocol):
    def link_up(self, link: ErgoLink, result: Established | Joined) -> enp.Codec: ...

    def link_events(self, link: ErgoLink, events: list[enp.Event]) -> None: ...

    def link_lost(self, link: ErgoLink, exc: BaseException | None) -> None: ...


def sha1_der(der: bytes | None) -> bytes | None:
    return hashlib.sha1(der).digest() if der else None


class ErgoLink(WriterFlowControl, asyncio.Protocol):
    """A link from TCP connect to close; ``ready`` resolves once the handshake is done."""

    def __init__(
        self,
        owner: ErgoLinkOwner,
        make_machine: MachineFactory,
        *,
        dialer: bool,
        handshake_timeout: float,
        max_message_size: int,
        settled: Callable[[ErgoLink], None] | None = None,
    ) -> None:
        self._owner = owner
        self._settled = settled
        self._make_machine = make_machine
        self.dialer = dialer
        self._timeout = handshake_timeout
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[Established | Joined] = self._loop.create_future()
        self.gone: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._machine: Machine | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.max_message_size = max_message_size
        self._reader = enp.PacketReader(max_message_size)
        self._codec: enp.Codec | None = None
        self._error: BaseException | None = None
        self._heard = False
        self.tls: TLSDetails | None = None
        self.writer: BatchWriter | None = None
        self.peer_address: Any = None
        self.local_address: Any = None
        self.messages_in = 0
        self.messages_out = 0

    # --- what the TLS layer said -------------------------------------------------------

    @property
    def peer_cert_sha1(self) -> bytes | None:
        return sha1_der(self.tls.peer_der) if self.tls is not None else None

    @property
    def local_cert_sha1(self) -> bytes | None:
        """SHA-1 of the leaf we served on this very connection (None: plain TCP)."""
        state = self.tls.local_state if self.tls is not None else None
        if state is None:
            return None
        return sha1_der(state.certificate.leaf.public_bytes(serialization.Encoding.DER))

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.peer_address = transport.get_extra_info("peername")
        self.local_address = transport.get_extra_info("sockname")
        self._timer = self._loop.call_later(self._timeout, self._timed_out)
        try:
            self.tls = TLSDetails(transport)
            self._machine = self._make_machine(self)
            if not isinstance(self._machine, AcceptorMachine):
                self._transport.write(self._machine.initiate())
        except Exception as exc:
            self._fail(exc)

    def data_received(self, data: bytes) -> None:
        if self._codec is not None:
            self._packets(data)
            return
        machine = self._machine
        if machine is None or self._transport is None:
            return
        self._heard = True
        try:
            result = machine.receive_data(data)
            out = machine.data_to_send()
            if out:
                self._transport.write(out)
        except (ProtocolError, ErrTooLarge) as exc:
            self._fail(exc)
            return
        if result is not None:
            self._complete(result, machine.trailing)

    def handshake_failed(self, exc: BaseException | None) -> None:
        """The TLS handshake before ours failed (or was cut): this link never came up."""
        self._settle()
        if not self.ready.done():
            self.ready.set_exception(ErrNoConnection(f"TLS handshake failed: {exc or 'closed'}"))
            self.ready.exception()
        if not self.gone.done():
            self.gone.set_result(None)
        self._owner.link_lost(self, exc)

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
        if reason is None and self._codec is None:
            reason = ErrNoConnection(
                "the Ergo peer closed the connection during the handshake: "
                + ("it refused us; " + COOKIE_HINT if self._heard or self.dialer else "closed")
            )
        if not self.ready.done():
            self.ready.set_exception(reason or ErrNoConnection("closed during the handshake"))
            self.ready.exception()
        if not self.gone.done():
            self.gone.set_result(None)
        self._owner.link_lost(self, reason)

    # --- after the handshake -----------------------------------------------------------

    def _complete(self, result: Established | Joined, trailing: bytes) -> None:
        assert self._transport is not None
        self._settle()
        if self._timer is not None:
            self._timer.cancel()
        self.writer = BatchWriter(self._loop, self._transport)
        try:
            self._codec = self._owner.link_up(self, result)
        except ErgoError as exc:
            self._fail(exc)
            return
        if not self.ready.done():
            self.ready.set_result(result)
        if trailing:
            self._packets(trailing)

    def _packets(self, data: bytes) -> None:
        codec = self._codec
        assert codec is not None
        try:
            packets = self._reader.feed(data)
        except (ProtocolError, ErrTooLarge) as exc:
            self._fail(exc)
            return
        events: list[enp.Event] = []
        for packet in packets:
            try:
                events.append(codec.decode(packet))
            except (RemoteProtocolError, ErgoError) as exc:
                _limited.log(
                    logging.WARNING,
                    (codec.peer, type(exc)),
                    "ergo link from %s: a packet skipped: %s",
                    codec.peer,
                    exc,
                )
        self.messages_in += len(events)
        if events:
            self._owner.link_events(self, events)

    def write(self, data: bytes) -> None:
        """Queue one packet (any thread); ``ErrNoConnection`` once the link is closing."""
        self._up().write(data)
        self.messages_out += 1

    def write_now(self, data: bytes) -> None:
        """Loop thread: as :meth:`write`."""
        self._up().write_now(data)
        self.messages_out += 1

    def _up(self) -> BatchWriter:
        writer = self.writer
        if writer is None:
            raise ErrNoConnection("the link is not up")
        return writer

    # --- ending ------------------------------------------------------------------------

    def _timed_out(self) -> None:
        if self._codec is None:
            self._fail(ErrTimeout(f"the Ergo handshake did not finish in {self._timeout} s"))

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            level = logging.INFO if isinstance(exc, HandshakeRejected) else logging.WARNING
            source = self.peer_address[0] if isinstance(self.peer_address, tuple) else None
            _limited.log(level, (source, type(exc)), "ergo link %s: %s", self.peer_address, exc)
        self._settle()
        # A peer that broke the protocol gets no TLS goodbye to wait for (a
        # graceful close would keep the link, and its peer, up until it answers).
        if self.writer is not None:
            self.writer.close()
        self.abort()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close(flush=True)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
