"""One TCP (or TLS) link in Ergo's own dialect: the asyncio glue around EHS and ENP.

The link runs the handshake machine (``net/ergo/handshake.py``) until it
yields a result, hands that to its owner (``link_up``), then cuts what
arrives into packets and hands each, decoded, to the owner (``link_event``).
A packet whose body cannot be decoded is logged and skipped (its framing is
intact, as Ergo does); broken framing closes the link. Writes come from any
thread through a :class:`~ergo_py.net.writer.BatchWriter`; what it shares
with our own link is in :class:`~ergo_py.net.linkbase.LinkBase`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from ergo_py.gen.errors import (
    ErgoError,
    ErrNoConnection,
    ErrTimeout,
    ErrTooLarge,
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
from ergo_py.net.linkbase import LinkBase
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.writer import BatchWriter

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


class ErgoLink(LinkBase[ErgoLinkOwner, Established | Joined]):
    """A link from TCP connect to close; ``ready`` resolves once the handshake is done."""

    _LOG_NAME = "ergo link"
    _limited = _limited

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
        super().__init__(owner, dialer=dialer, handshake_timeout=handshake_timeout, settled=settled)
        self._make_machine = make_machine
        self._machine: Machine | None = None
        self.max_message_size = max_message_size
        self._reader = enp.PacketReader(max_message_size)
        self._codec: enp.Codec | None = None

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

    # --- the handshake -----------------------------------------------------------------

    def _begin(self) -> bytes:
        self._machine = self._make_machine(self)
        if isinstance(self._machine, AcceptorMachine):
            return b""
        return self._machine.initiate()

    def data_received(self, data: bytes) -> None:
        if self._codec is not None:
            self._receive(data)
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
        super().handshake_failed(exc)
        self._gone(exc)

    def _unexplained_end(self) -> BaseException | None:
        if self._codec is not None:
            return None
        return ErrNoConnection(
            "the Ergo peer closed the connection during the handshake: "
            + ("it refused us; " + COOKIE_HINT if self._heard or self.dialer else "closed")
        )

    def _handshake_done(self, result: Established | Joined) -> None:
        self._codec = self._owner.link_up(self, result)

    # --- after the handshake -----------------------------------------------------------

    def _receive(self, data: bytes) -> None:
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
            self._fail(
                ErrTimeout(f"the Ergo handshake did not finish in {self._handshake_timeout} s")
            )

    def _fail(self, exc: BaseException, refused_by_us: bool = False, abort: bool = True) -> None:
        # A peer that broke the protocol gets no TLS goodbye to wait for (a
        # graceful close would keep the link, and its peer, up until it answers).
        super()._fail(exc, refused_by_us, abort=True)
