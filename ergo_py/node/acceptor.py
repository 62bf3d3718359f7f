"""Listening and admitting: one acceptor's socket and the connections on their way in.

Every accepted connection passes two stages, each with its own budget and
deadline, before it is a link of the node (``link_up``):

1. **TLS** (TLS acceptors only). Anyone can open a TCP connection and sit in
   this stage, certificate or not, so its budget is large, cheap to keep and
   shared by source address: at most ``max_pre_tls`` connections in all, at
   most ``max_pre_tls_per_source`` from one source (:func:`source_of`), each
   cut after ``tls_handshake_timeout``. A newcomer is always let in; room is
   made by cutting the oldest connection of its own source when that source
   is at its share, or else, when the stage is full, the oldest of the source
   holding the most (:class:`PreTLSBudget`). A flood from one address thus
   only ever displaces itself, and a silent or slow client is gone after the
   short TLS deadline.
2. **The handshake** (ours, or Ergo's EHS for ``node/ergo_acceptor.py``):
   only links past TLS (a client certificate verified,
   when the acceptor requires one) count toward ``max_handshakes``; beyond it
   a link is refused with ``Reject("busy")``. Deadline ``handshake_timeout``,
   from the end of TLS on.

Every refusal of a client that has not finished TLS is logged through
:meth:`AcceptorBase._log_refusal` (one place, rate-limited per acceptor), at INFO at most
except a certificate verdict. The acceptor owns these connections until
they come up: :meth:`Acceptor.close` ends them with the listening socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Hashable
from typing import Any, Generic, Protocol, Self, TypeVar, cast

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import ErrIncorrect, HandshakeRejected, NodeError
from ergo_py.gen.identifiers import Atom
from ergo_py.gen.node import AcceptorInfo
from ergo_py.gen.options import PROTOCOL_ERGO_PY, AcceptorOptions
from ergo_py.lib.logs import fields
from ergo_py.net.handshake import REASON_BUSY, AcceptorHandshake
from ergo_py.net.link import LinkOwner, LinkProtocol
from ergo_py.net.linkbase import TLSDetails
from ergo_py.net.ratelog import LogLimiter
from ergo_py.net.tls import ListenerTLS, server_tls_protocol
from ergo_py.node.context import NodeContext

__all__ = ["Acceptor", "AcceptorBase", "AcceptorOwner", "PreTLSBudget", "source_of"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
OwnerT = TypeVar("OwnerT")


class AcceptorOwner(LinkOwner, Protocol):
    """Who an acceptor's links report to; it admits their peers (``link_admit``)."""


def source_of(peer: Any) -> str:
    """The source a connection from ``peer`` (a socket address) counts against.

    An IPv4 address is one source; an IPv6 one counts by its /64 (what one
    host usually gets); an IPv4-mapped IPv6 address counts as the IPv4 one.
    """
    try:
        addr = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError, KeyError):
        return str(peer)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr.packed, 64), strict=False))
    return str(addr)


class PreTLSBudget(Generic[K]):
    """Connections in their TLS handshake, by source (sans-IO bookkeeping).

    :meth:`admit` always takes the newcomer and says which connection, if
    any, must be cut to make room, and why: the oldest of the newcomer's own
    source when that source holds ``per_source``; else, when ``limit`` are
    held, the oldest of the source holding the most (the newcomer's own when
    it holds as many). So no source ever holds more than its share, and a
    source holding fewer than the heaviest is never cut for another's sake.
    """

    def __init__(self, limit: int, per_source: int) -> None:
        if limit < 1 or per_source < 1:
            raise ErrIncorrect("the pre-TLS budgets must be at least 1")
        self.limit = limit
        self.per_source = min(per_source, limit)
        self._by_source: dict[str, dict[K, None]] = {}  # oldest first
        self._source: dict[K, str] = {}

    def __len__(self) -> int:
        return len(self._source)

    def __contains__(self, key: object) -> bool:
        return key in self._source

    def held(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    def admit(self, key: K, source: str) -> tuple[K, str] | None:
        """Count ``key`` from ``source`` in; the connection to cut first, and why (or None)."""
        victim: tuple[K, str] | None = None
        mine = self.held(source)
        if mine >= self.per_source:
            victim = (self._oldest(source), f"{source} holds {mine}, its share")
        elif len(self._source) >= self.limit:
            heaviest = max(self._by_source, key=self.held)
            if mine >= self.held(heaviest):
                heaviest = source
            victim = (
                self._oldest(heaviest),
                f"all {self.limit} taken; {heaviest} holds the most ({self.held(heaviest)})",
            )
        if victim is not None:
            self.release(victim[0])
        self._source[key] = source
        self._by_source.setdefault(source, {})[key] = None
        return victim

    def release(self, key: K) -> bool:
        """Count ``key`` out (it finished TLS, failed or was cut); False if it was not in."""
        source = self._source.pop(key, None)
        if source is None:
            return False
        held = self._by_source[source]
        del held[key]
        if not held:
            del self._by_source[source]
        return True

    def drain(self) -> list[K]:
        """Count everything out; what was held, oldest first per source."""
        keys = [k for held in self._by_source.values() for k in held]
        self._by_source.clear()
        self._source.clear()
        return keys

    def _oldest(self, source: str) -> K:
        return next(iter(self._by_source[source]))


class _Admitting(Protocol):
    """A link on its way in, as far as its acceptor cares."""

    def abort(self) -> None: ...

    def handshake_failed(self, exc: BaseException | None) -> None:
        """Its TLS handshake failed: it never came up."""
        ...


class _InTLS:
    """One accepted connection while it is in its TLS handshake."""

    __slots__ = ("ended", "link", "peer", "transport")

    link: _Admitting

    def __init__(self) -> None:
        self.peer: Any = None
        self.transport: asyncio.Transport | None = None
        self.ended = False  # cut by us: its end is already accounted (and logged)


def _cert_manager(options: AcceptorOptions, node_cm: CertManager | None) -> CertManager | None:
    """The cert manager an acceptor serves TLS with (None: plain TCP)."""
    if options.tls is False:
        return None
    cm = options.cert_manager or node_cm
    if options.tls is True and cm is None:
        raise NodeError("acceptor asks for TLS but no cert manager is set")
    return cm


class AcceptorBase(Generic[OwnerT]):
    """One listening socket and the connections it is admitting (loop thread).

    The two budgets and deadlines above, whatever the handshake after TLS:
    a subclass makes the link protocol (:meth:`_link`) and, in the handshake
    machine it builds once TLS is done, calls :meth:`_enter_handshake`.
    :meth:`close` stops listening and ends the connections not yet admitted;
    links that came up belong to the owner.
    """

    protocol = PROTOCOL_ERGO_PY  # what AcceptorInfo says
    tls_class: type[ListenerTLS] = ListenerTLS

    def __init__(
        self,
        owner: OwnerT,
        options: AcceptorOptions,
        ctx: NodeContext,
    ) -> None:
        if options.tls_handshake_timeout <= 0:
            raise ErrIncorrect("tls_handshake_timeout must be positive")
        self._owner = owner  # who its links report to
        self.options = options
        self._ctx = ctx
        self._cookie = options.cookie if options.cookie is not None else ctx.cookie
        self._max_size = (
            options.max_message_size
            if options.max_message_size is not None
            else ctx.net.max_message_size
        )
        self._pre_tls: PreTLSBudget[_InTLS] = PreTLSBudget(
            options.max_pre_tls, options.max_pre_tls_per_source
        )
        self._handshaking: set[_Admitting] = set()
        # Anyone on the network can cause refusal lines: each acceptor has its
        # own budget (per kind and source), so one listener's flood, or an
        # earlier node of the same name, does not silence another's.
        self._limited = LogLimiter(log)
        self.host = options.host or Atom(ctx.name).host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._closing = False
        cm = _cert_manager(options, ctx.cert_manager)
        self.tls = self.tls_class(cm) if cm is not None else None

    async def bound(self) -> Self:
        """Listening on the first free port of its range (``NodeError`` if none)."""
        try:
            await self._bind()
        except BaseException:
            self.close()
            raise
        return self

    def _log_refusal(self, what: str, peer: Any, why: Any, level: int = logging.INFO) -> None:
        """Every refusal of a client that had not finished TLS is logged here,
        rate-limited per kind of refusal and source address."""
        source = peer[0] if isinstance(peer, tuple) and peer else peer
        self._limited.log(
            level,
            (what, source),
            "%s: %s from %s: %s",
            self._ctx.name,
            what,
            peer,
            why,
            extra=fields(self._ctx.name, peer),
        )

    def _link(self, entry: _InTLS | None) -> _Admitting:
        """The link (an ``asyncio.Protocol``) for one accepted connection; ``entry``: its TLS
        stage."""
        raise NotImplementedError

    def _enter_handshake(self, entry: _InTLS | None, link: _Admitting) -> None:
        """TLS is done (or there is none): from one budget to the other, or ``busy``."""
        if entry is not None:
            self._pre_tls.release(entry)
        if len(self._handshaking) >= self.options.max_handshakes:
            raise HandshakeRejected(REASON_BUSY)
        self._handshaking.add(link)

    def _settled(self, link: _Admitting) -> None:
        """The link's handshake ended (up or not): it leaves the acceptor's count."""
        self._handshaking.discard(link)

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        ports = (
            [opts.port] if opts.port == 0 else range(opts.port, opts.port + max(1, opts.port_range))
        )
        factory = self._tls_protocol if self.tls is not None else self._plain_protocol
        last: OSError | None = None
        for port in ports:
            try:
                self._server = await loop.create_server(factory, self.host, port)
            except OSError as exc:
                last = exc
                continue
            self.port = self._server.sockets[0].getsockname()[1]
            log.info(
                "%s: accepting on %s:%d (%s, %s)",
                self._ctx.name,
                self.host,
                self.port,
                "TLS" if self.tls is not None else "plain TCP",
                self.protocol,
            )
            return
        raise NodeError(f"no free port for an acceptor on {self.host} from {opts.port}: {last}")

    def info(self) -> AcceptorInfo:
        opts = self.options
        return AcceptorInfo(
            host=self.host,
            port=self.port,
            tls=self.tls is not None,
            cert_version=self.tls.manager.version if self.tls is not None else None,
            max_message_size=self._max_size,
            max_handshakes=opts.max_handshakes,
            handshake_timeout=opts.handshake_timeout,
            max_pre_tls=opts.max_pre_tls,
            max_pre_tls_per_source=opts.max_pre_tls_per_source,
            tls_handshake_timeout=opts.tls_handshake_timeout,
            protocol=self.protocol,
        )

    def close(self) -> None:
        """Stop listening (idempotent); end every connection still being admitted."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self.tls is not None:
            self.tls.close()
        for entry in self._pre_tls.drain():
            entry.ended = True
            if entry.transport is not None:
                entry.transport.abort()
        for link in list(self._handshaking):
            link.abort()

    async def wait_closed(self, timeout: float = 2.0) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout)

    # --- admission (loop thread) --------------------------------------------------------

    def _plain_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self._link(None))

    def _tls_protocol(self) -> asyncio.BaseProtocol:
        assert self.tls is not None
        entry = _InTLS()
        entry.link = self._link(entry)
        return server_tls_protocol(
            asyncio.get_running_loop(),
            cast(asyncio.BaseProtocol, entry.link),
            self.tls.context,
            self.options.tls_handshake_timeout,
            lambda peer, exc: self._tls_failed(entry, peer, exc),
            lambda peer, transport: self._tls_started(entry, peer, transport),
        )

    def _tls_started(self, entry: _InTLS, peer: Any, transport: asyncio.BaseTransport) -> None:
        """Accepted: count it into the TLS stage, cutting one connection if need be."""
        entry.peer = peer
        entry.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        if self._closing:
            entry.ended = True
            entry.transport.abort()
            return
        cut = self._pre_tls.admit(entry, source_of(peer))
        if cut is not None:
            victim, why = cut
            victim.ended = True
            self._log_refusal("dropped a TLS handshake", victim.peer, f"cut to make room ({why})")
            if victim.transport is not None:
                victim.transport.abort()

    def _tls_failed(self, entry: _InTLS, peer: Any, exc: BaseException | None) -> None:
        self._pre_tls.release(entry)
        entry.link.handshake_failed(exc)
        if not entry.ended and not self._closing:
            self._log_tls_failure(peer, exc)

    def _log_tls_failure(self, peer: Any, exc: BaseException | None) -> None:
        assert self.tls is not None
        if isinstance(exc, ssl.SSLError) and _certificate_verdict(exc):
            # A peer's certificate refused: what an operator must see when a
            # rotation or a CA change went wrong on one side.
            state = self.tls.manager.state()
            why = (
                f"{getattr(exc, 'verify_message', None) or exc.reason or exc} "
                f"(our certificate {state.certificate.fingerprint[:16]}, version "
                f"{state.version}; client auth {state.client_auth.name})"
            )
            self._log_refusal("refused a TLS handshake", peer, why, logging.WARNING)
        elif isinstance(exc, ssl.SSLError):  # not TLS, or broken TLS: anyone can send that
            self._log_refusal("refused a TLS handshake", peer, exc.reason or exc)
        elif isinstance(exc, ConnectionError | EOFError) or exc is None:
            # The client hung up mid-handshake: often because it refused our certificate
            # (it does not trust our CA); only its own log can say so.
            state = self.tls.manager.state()
            said = (str(exc) or type(exc).__name__) if exc is not None else "no reason given"
            why = (
                f"did not finish: the client closed the connection ({said}); if it "
                f"should have connected, check that it trusts the CA of our certificate "
                f"{state.certificate.fingerprint[:16]} (version {state.version})"
            )
            self._log_refusal("dropped a TLS handshake", peer, why)
        else:  # the deadline: no verdict on anyone's certificate
            why = f"did not finish: {str(exc) or type(exc).__name__}"
            self._log_refusal("dropped a TLS handshake", peer, why)


def _certificate_verdict(exc: ssl.SSLError) -> bool:
    """The handshake failed on a certificate (ours refused, or the client's)."""
    if isinstance(exc, ssl.SSLCertVerificationError) or getattr(exc, "verify_message", None):
        return True
    reason = exc.reason or ""
    return "CERTIFICATE" in reason or "UNKNOWN_CA" in reason


class Acceptor(AcceptorBase[AcceptorOwner]):
    """An acceptor for our own protocol; ``await Acceptor(...).bound()`` listens."""

    def _link(self, entry: _InTLS | None) -> LinkProtocol:
        """The link protocol for one accepted connection; ``entry``: its TLS stage."""
        opts = self.options
        owner = self._owner
        net = self._ctx.net
        link: LinkProtocol

        def machine(tls: TLSDetails) -> AcceptorHandshake:
            self._enter_handshake(entry, link)
            return AcceptorHandshake(
                node_name=self._ctx.name,
                creation=self._ctx.creation,
                cookie=self._cookie,
                flags=int(net.flags),
                max_message_size=self._max_size,
                pool_size=max(1, min(255, net.pool_size)),
                pool_dsn=(f"{self.host}:{self.port}",),
                local_cert_fp=tls.local_fp,
                peer_cert_fp=tls.peer_fp,
                max_handshake_size=opts.handshake_max_message_size,
            )

        link = LinkProtocol(
            owner,
            machine,
            handshake_timeout=opts.handshake_timeout,
            max_message_size=self._max_size,
            dialer=False,
            keepalive=net.keepalive_period,
            settled=self._settled,
        )
        return link
