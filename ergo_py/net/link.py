"""One TCP (or TLS) link: the asyncio glue around the handshake and frame machines.

A ``LinkProtocol`` moves bytes between its transport and the sans-IO machines
and hands results to its owner (a :class:`LinkOwner`), always on the loop
thread; when a machine asks who may come in, the owner's ``link_admit``
answers and the link feeds the verdict back. It knows nothing about
processes. One owner per link: the protocol closes its transport itself only
on a protocol error or timeout, and tells the owner exactly once that it is
gone (``link_lost``). What it shares with Ergo's dialect
(``node/ergo_link.py``) is in :class:`~ergo_py.net.linkbase.LinkBase`.

A link counts as up only after the peer's first handshake message arrived
and the handshake completed: under TLS 1.3 a refused client certificate shows
up only at the client's first read, so a dial is reported refused, never
"up, then mysteriously closed".

A graceful end is a half-close in each direction: ``send_close`` puts a
``Close`` frame behind everything already accepted and refuses further writes;
the link keeps reading until the peer's ``Close`` (``link_peer_closed``), and
closes the transport once both have been sent. ``closed_cleanly`` then tells
the owner that nothing in flight either way was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ergo_py.gen.errors import (
    ErrNoConnection,
    ErrTimeout,
    ErrTooLarge,
    HandshakeRejected,
    ProtocolError,
    RemoteProtocolError,
)
from ergo_py.gen.options import KEEPALIVE_MISSES
from ergo_py.net.frames import Close, Frame, FrameDecoder, FrameEncoder, Keepalive
from ergo_py.net.handshake import (
    NEED_DATA,
    REASON_PROTOCOL,
    AcceptorHandshake,
    AdmissionEvent,
    DialerHandshake,
    HandshakeComplete,
    JoinComplete,
    JoinHandshake,
    JoinRequested,
    PeerIntroduced,
    Refused,
    Rejected,
    reject_message,
)
from ergo_py.net.linkbase import LinkBase, TLSDetails
from ergo_py.net.ratelog import LogLimiter

log = logging.getLogger(__name__)

Machine = DialerHandshake | AcceptorHandshake | JoinHandshake


# The control frames carry no identifiers: encoded once.
_KEEPALIVE = FrameEncoder().encode_frame(Keepalive())
_CLOSE = {replaced: FrameEncoder().encode_frame(Close(replaced)) for replaced in (False, True)}

# Senders block while more than this is waiting for the peer to read it, and
# go on once it is below the low mark: bounded memory, few stalls.
WRITE_HIGH_WATER = 4 << 20
WRITE_LOW_WATER = 1 << 20


class LinkOwner(Protocol):
    """Who a link reports to (the node's network layer), on the loop thread."""

    def link_admit(self, link: LinkProtocol, event: AdmissionEvent) -> str | None:
        """Why the peer the handshake introduces is refused, or None to let it in."""
        ...

    def link_up(self, link: LinkProtocol, done: HandshakeComplete | JoinComplete) -> None: ...

    def link_frames(self, link: LinkProtocol, frames: list[Frame]) -> None: ...

    def link_peer_closed(self, link: LinkProtocol, replaced: bool) -> None: ...

    def link_lost(self, link: LinkProtocol, exc: BaseException | None) -> None: ...

    # Optional: ``link_handshake(link, exc)`` once the handshake is over (exc None: up).


MachineFactory = Callable[[TLSDetails], Machine]


class LinkProtocol(LinkBase[LinkOwner, HandshakeComplete | JoinComplete]):
    """A link from TCP connect to close; ``ready`` resolves when the handshake is done."""

    _LOG_NAME = "link"
    _limited = LogLimiter(log)

    def __init__(
        self,
        owner: LinkOwner,
        make_machine: MachineFactory,
        *,
        handshake_timeout: float,
        max_message_size: int,
        dialer: bool,
        settled: Callable[[LinkProtocol], None] | None = None,
        keepalive: float = 0.0,
    ) -> None:
        super().__init__(owner, dialer=dialer, handshake_timeout=handshake_timeout, settled=settled)
        self._make_machine = make_machine
        self._max_message_size = max_message_size
        self._machine: Machine | None = None
        self._decoder: FrameDecoder | None = None
        self.sent_close = False
        self.peer_closed = False
        self._keepalive = keepalive
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._bytes_in = 0
        self._marks = (-1, -1)  # (bytes in, messages out) at the last tick
        self._silent_ticks = 0
        self.started = self._loop.time()
        self.ready.add_done_callback(self._handshake_over)

    def _handshake_over(self, ready: asyncio.Future[Any]) -> None:
        report = getattr(self._owner, "link_handshake", None)
        if report is not None:
            exc = None if ready.cancelled() else ready.exception()
            report(self, exc)

    @property
    def bytes_in(self) -> int:
        """Bytes received on this link (handshake included)."""
        return self._bytes_in

    # --- asyncio callbacks -------------------------------------------------------------

    def _begin(self) -> bytes:
        assert self.tls is not None
        try:
            self._machine = self._make_machine(self.tls)
        except HandshakeRejected as exc:  # refused before any message, e.g. "busy"
            self._write_quietly(reject_message(exc.reason))
            self._fail(exc, refused_by_us=True)
            return b""
        if isinstance(self._machine, AcceptorHandshake):
            return b""
        return self._machine.initiate()

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        if self._decoder is not None:
            self._receive(data)
            return
        if self._machine is None:
            return
        self._heard = True
        try:
            self._machine.receive_data(data)
            self._drive()
        except (ProtocolError, ErrTooLarge) as exc:
            self._write_quietly(self._machine.reject(REASON_PROTOCOL))
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        super().connection_lost(exc)

    def _unexplained_end(self) -> BaseException | None:
        tls_up = self.tls is not None and self.tls.version is not None
        if self.dialer and tls_up and not self._heard:
            # TLS 1.3 finishes the client's side before the server has
            # checked the client certificate; a refusal is this EOF.
            return ErrNoConnection(
                "the peer closed the connection before its first handshake message: "
                "it refused our TLS client certificate (unknown CA, expired, or not "
                "presented while required) or it is not an ergo_py node; its log says which"
            )
        return None

    # --- handshake ---------------------------------------------------------------------

    def _drive(self) -> None:
        machine = self._machine
        assert machine is not None and self._transport is not None
        while True:
            event = machine.next_event()
            out = machine.data_to_send()
            if out:
                self._transport.write(out)
            if event is NEED_DATA:
                return
            if isinstance(event, PeerIntroduced | JoinRequested):
                reason = self._owner.link_admit(self, event)
                if reason is None:
                    machine.admit()
                else:
                    machine.refuse(reason)
                continue
            if isinstance(event, (HandshakeComplete, JoinComplete)):
                self._complete(event, machine.trailing_data)
                return
            if isinstance(event, Refused):
                self._fail(HandshakeRejected(event.reason), refused_by_us=True)
                return
            if isinstance(event, Rejected):
                self._fail(HandshakeRejected(event.reason))
                return

    def _handshake_done(self, done: HandshakeComplete | JoinComplete) -> None:
        assert self._transport is not None
        self._decoder = FrameDecoder(self._max_message_size, peer=done.peer_name)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        if self._keepalive > 0:
            self._keepalive_timer = self._loop.call_later(self._keepalive, self._tick)
        self._owner.link_up(self, done)

    def _receive(self, data: bytes) -> None:
        decoder = self._decoder
        assert decoder is not None
        if self.peer_closed:
            if data:
                self._fail(RemoteProtocolError("data after the peer's Close"))
            return
        frames: list[Frame] = []
        try:
            decoder.receive_data(data)
            decoder.drain(frames)  # keepalives did their job by arriving
            if frames and isinstance(close := frames[-1], Close):
                frames.pop()
                if frames:
                    self._deliver(frames)
                self._peer_close(close, decoder.buffered > 0)
                return
        except (ProtocolError, ErrTooLarge) as exc:
            self._limited.log(
                logging.WARNING,
                (self._source, type(exc)),
                "link %s: %s; closing",
                self.peer_address,
                exc,
            )
            if frames:
                self._deliver(frames)
            self._fail(exc)
            return
        if frames:
            self._deliver(frames)

    def _peer_close(self, frame: Close, trailing: bool) -> None:
        self.peer_closed = True
        if trailing:
            self._fail(RemoteProtocolError("data after the peer's Close"))
            return
        self._owner.link_peer_closed(self, frame.replaced)
        if self.sent_close:
            self.close()

    def send_close(self, replaced: bool) -> None:
        """Half-close (loop thread): a Close frame behind every accepted frame.

        Writes from other threads fail with ``gen.ErrNoConnection`` from now
        on. The transport closes once the peer's Close has arrived too.
        """
        writer = self.writer
        if self.sent_close or writer is None or self._transport is None:
            return
        self.sent_close = True
        writer.close(flush=True)
        self._write_quietly(_CLOSE[replaced])
        if self.peer_closed:
            self.close()

    def _tick(self) -> None:
        """Every keepalive period: speak if we were quiet, give up if the peer was."""
        self._keepalive_timer = None
        if self._transport is None or self._transport.is_closing():
            return
        bytes_in, out = self._marks
        self._silent_ticks = self._silent_ticks + 1 if self._bytes_in == bytes_in else 0
        if self._silent_ticks >= KEEPALIVE_MISSES:
            silent = self._silent_ticks * self._keepalive
            # A silent peer will not answer a TLS close either: abort.
            self._fail(ErrTimeout(f"nothing from the peer for {silent:.1f} s"), abort=True)
            return
        writer = self.writer
        if self.messages_out == out and writer is not None and not writer.closed:
            writer.write_now(_KEEPALIVE)
        self._marks = (self._bytes_in, self.messages_out)
        self._keepalive_timer = self._loop.call_later(self._keepalive, self._tick)

    @property
    def closed_cleanly(self) -> bool:
        """Both Close frames crossed: nothing either side sent was cut off."""
        return self.sent_close and self.peer_closed and self._error is None

    def _deliver(self, frames: list[Frame]) -> None:
        assert self._decoder is not None
        # Not len(frames): a send batch is one of them and counts as its messages.
        self.messages_in = self._decoder.messages
        self._owner.link_frames(self, frames)

    # --- ending ------------------------------------------------------------------------

    def _timed_out(self) -> None:
        if self._decoder is None and self._transport is not None:
            if self._machine is not None:
                self._write_quietly(self._machine.reject("timeout"))
            self._fail(ErrTimeout(f"handshake did not finish in {self._handshake_timeout} s"))

    def _write_quietly(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
