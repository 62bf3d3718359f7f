"""Who may connect: the one place that says yes or no to a peer (loop thread).

Every handshake machine stops once it knows who the peer is and hands out
:class:`~ergo_py.net.handshake.PeerIntroduced` (a new connection) or
:class:`~ergo_py.net.handshake.JoinRequested` (a pool link); the link passes
it here (``LinkOwner.link_admit``) and feeds the verdict back, so a refusal
reaches the peer as ``Reject{reason}`` inside the handshake, on either side.
The machines refuse on their own only what is wrong on the wire (cookie,
TLS binding, a dialled node answering under another name, a dialer
claiming our own name).

A new connection is checked in this order; the first reason wins:

1. **Simultaneous connect** (accepting only): we are dialing that node
   ourselves, both sides enable ``ENABLE_SIMULTANEOUS_CONNECT`` and our name
   is the smaller: ``"simultaneous"`` (our own dial wins; the pair ends with
   one connection, made by the smaller name).
2. **The connection table** (:meth:`ConnectionTable.check_new_peer`):
   ``"name taken"`` when a connection to the same incarnation is up and this
   one does not ask to replace it (a dialer refused so uses that one).
3. **Identity** (under TLS, ``network.verify_node_identity``): the peer's
   verified certificate must name the node it claims to be:
   ``"identity: ..."``.

A pool link must name a connection of ours to that peer (current or
draining: ``"unknown connection"``) and pass the identity check too.

A dialer's verdict stands: its handshake completes in the same step. An
acceptor completes half a round trip later, so ``ConnectionTable.install``
applies the table's rule once more then, for a connection that came up
meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ergo_py.gen.identifiers import Atom
from ergo_py.gen.options import NetworkFlags
from ergo_py.lib.logs import fields
from ergo_py.net.handshake import (
    REASON_SIMULTANEOUS,
    REASON_UNKNOWN_CONNECTION,
    AdmissionEvent,
    JoinRequested,
)
from ergo_py.net.linkbase import TLSDetails
from ergo_py.net.ratelog import LogLimiter
from ergo_py.node.connections import ConnectionTable
from ergo_py.node.context import NodeContext

__all__ = ["Admission"]

log = logging.getLogger(__name__)
_limited = LogLimiter(log)  # a peer can cause these lines as often as it likes

_SIMULTANEOUS = int(NetworkFlags.ENABLE_SIMULTANEOUS_CONNECT)


class Admission:
    """The node's verdict on each peer a handshake introduces (loop thread)."""

    def __init__(
        self, ctx: NodeContext, table: ConnectionTable, dialing: Callable[[str], bool]
    ) -> None:
        """``dialing(peer)``: a dial of ours to ``peer`` is under way."""
        self._ctx = ctx
        self._table = table
        self._dialing = dialing

    def admit(self, event: AdmissionEvent, tls: TLSDetails | None, dialer: bool) -> str | None:
        """Why the peer ``event`` names is refused, or None to let it in.

        ``tls``: what TLS said on this link (None: plain TCP); ``dialer``:
        this side dialed the link.
        """
        peer = event.peer_name
        if isinstance(event, JoinRequested):
            conn = self._table.by_id(event.connection_id)
            if conn is None or conn.peer != peer:
                return REASON_UNKNOWN_CONNECTION
        else:
            if (
                not dialer
                and int(self._ctx.net.flags) & int(event.peer_flags) & _SIMULTANEOUS
                and self._ctx.name < peer
                and self._dialing(peer)
            ):
                return REASON_SIMULTANEOUS
            reason = self._table.check_new_peer(
                peer, event.peer_creation, event.replace, dialer=dialer
            )
            if reason is not None:
                return reason
        reason = self._identity_refusal(tls, peer, dialer)
        if reason is not None:
            key = (self._ctx.name, "identity", peer)
            _limited.log(
                logging.WARNING,
                key,
                "%s: refused %s: %s",
                self._ctx.name,
                peer,
                reason,
                extra=fields(self._ctx.name, peer),
            )
        return reason

    def _identity_refusal(self, tls: TLSDetails | None, peer_name: str, dialer: bool) -> str | None:
        """Why a peer's verified certificate does not prove it is ``peer_name`` (or None)."""
        if not self._ctx.net.verify_node_identity or tls is None or tls.peer is None:
            return None
        if dialer and self._ctx.net.insecure_skip_verify:
            return None
        peer = tls.peer
        if peer.has_node_name(peer_name):
            return None
        host = Atom(peer_name).host
        if (
            not peer.node_names
            and self._ctx.net.identity_host_fallback
            and (host in peer.dns_names or host in peer.ip_addresses)
        ):
            return None
        named = ", ".join(peer.node_names) or "no node name"
        return f"identity: certificate {peer.fingerprint[:16]} names {named}, not {peer_name}"
