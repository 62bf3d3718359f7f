"""An acceptor for Go Ergo nodes: our acceptor's admission, Ergo's handshake after TLS.

Everything before the handshake is :class:`~ergo_py.node.acceptor.AcceptorBase`'s,
as for our own protocol: the per-source pre-TLS budget and its deadline (a
plaintext client on a TLS port is refused there, logged), ``max_handshakes``
(beyond it a link is refused ``busy``: Ergo has no refusal message, so the
Go dialer sees the connection close) and ``handshake_timeout`` from the end
of TLS on. What differs is Ergo's: TLS asks for no client certificate (Go's
dialer presents none), and the link speaks EHS, then ENP.
"""

from __future__ import annotations

import ssl
from dataclasses import replace
from typing import Any, Protocol

from ergo_py.gen.options import PROTOCOL_ERGO
from ergo_py.net.ergo.handshake import AcceptorMachine, Local
from ergo_py.net.tls import ListenerTLS
from ergo_py.node.acceptor import AcceptorBase, _InTLS
from ergo_py.node.ergo_link import ErgoLink, ErgoLinkOwner

__all__ = ["ErgoAcceptor", "ErgoAcceptorOwner"]


class ErgoAcceptorOwner(ErgoLinkOwner, Protocol):
    """Who an ergo acceptor's links report to: it admits their peers and pool links."""

    def admit(self, peer: str, creation: int) -> str | None:
        """Why ``peer`` is refused (None: welcome)."""
        ...

    def join(self, peer: str, connection_id: str) -> str | None:
        """Why a pool link to ``connection_id`` of ``peer`` is refused (None: welcome)."""
        ...

    def local(self, cookie: str | None = None) -> Local:
        """Who we are in a handshake (``cookie``: the acceptor's own, if it has one)."""
        ...

    def pool_size(self) -> int:
        """How many links a connection's pool has (what we offer a Go dialer)."""
        ...

    def accepted(self, link: ErgoLink) -> None:
        """A link was made for an accepted connection (the owner closes it at the end)."""
        ...


class NoClientCertTLS(ListenerTLS):
    """The cert manager's server certificate, asking the client for none (Ergo's acceptor)."""

    def _sync(self) -> None:
        self.context.verify_mode = ssl.CERT_NONE


class ErgoAcceptor(AcceptorBase[ErgoAcceptorOwner]):
    """One listening socket for Go nodes; ``await ErgoAcceptor(...).bound()`` listens."""

    protocol = PROTOCOL_ERGO
    tls_class = NoClientCertTLS

    @property
    def max_message_size(self) -> int:
        return self._max_size

    def _link(self, entry: _InTLS | None) -> ErgoLink:
        owner = self._owner

        def machine(link: ErgoLink) -> AcceptorMachine:
            self._enter_handshake(entry, link)
            pool = owner.pool_size()
            local = replace(owner.local(self._cookie), max_message_size=self._max_size)
            return AcceptorMachine(
                local,
                pool_size=pool,
                pool_dsn=(_dsn(link.local_address, self.host, self.port),),
                local_cert_sha1=link.local_cert_sha1,
                admit=owner.admit,
                join=owner.join,
                max_handshake_size=self.options.handshake_max_message_size,
            )

        link = ErgoLink(
            owner,
            machine,
            dialer=False,
            handshake_timeout=self.options.handshake_timeout,
            max_message_size=self._max_size,
            settled=self._settled,
        )
        owner.accepted(link)
        return link


def _dsn(local: Any, host: str, port: int) -> str:
    """Where the pool's further links dial: the address this connection reached (as Go)."""
    if isinstance(local, tuple) and len(local) >= 2:
        host, port = str(local[0]), int(local[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
