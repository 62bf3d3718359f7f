"""The handshake (sans-IO): Ergo's "EHS R1" shape with our own msgpack bodies.

Every handshake message is framed ``[87][2][uint32 BE body length][body]``;
the body is a msgpack array ``[type, fields...]``. The exchange (D = dialer,
A = acceptor; every digest is HMAC-SHA256 keyed by the cookie over a labelled,
msgpack-encoded list of its inputs)::

    D -> A  Hello{s1, digest(s1)}                       A checks the cookie
            Introduce{node, version, flags, creation, max_message_size, replace,
                      digest(s1, server_fp, fields)}     and who is dialing
    A -> D  Hello{s2, digest(s1, s2), client_fp,        D checks the cookie and
                  digest_cert(s1, s2, server_fp, client_fp)}   the TLS binding
            Introduce{...A's fields..., digest}  Accept{id, pool_size, pool_dsn, digest}
    D -> A  Accept{digest(s1, s2, fingerprints, id, D's fields)}   both complete

The dialer's first flight carries its Introduce, so the dialer is done after
one round trip (its first frames follow its Accept in the same write) and the
acceptor after one and a half. Nothing is decided on the strength of the first
flight alone: the acceptor only *checks* the introduction (it may refuse it);
the connection comes up when the dialer's Accept, whose digest covers the
acceptor's fresh salt and both fingerprints, proves the dialer is live.

Extra pool links (after a full handshake) use a Join::

    D -> A  Join{node, id, s1, digest(s1, id, node, server_fp)}
    A -> D  Accept{s2, client_fp, digest(s1, s2, id, node, server_fp, client_fp)}
    D -> A  Accept{digest(...)}                         both sides complete

Either side may answer with ``Reject{reason}`` instead.

**Admission.** A machine never asks its owner anything in the middle of
parsing. Once it knows who the peer is (an acceptor: the dialer's
introduction or Join, checked; a dialer: the acceptor's whole answer,
checked) it hands out :class:`PeerIntroduced` or :class:`JoinRequested` and
waits for ``admit()`` or ``refuse(reason)``; a refusal goes to the peer as
``Reject{reason}``. The machines themselves refuse only what is wrong on
the wire: the cookie, the TLS binding, a dialled node answering under
another name (``"wrong node"``), a dialer claiming the acceptor's own name
(``"name taken"``).

``replace`` (the dialer's; the acceptor sends False): this connection is to
take over from the one already up between the same two node incarnations (a
hand-over after a certificate rotation), instead of being refused as a
duplicate. The old one is then drained with Close frames (see ``frames``).

**TLS binding.** Each machine is built with the SHA-256 fingerprints of the
certificates *as presented on this connection*: ``local_cert_fp`` (ours) and
``peer_cert_fp`` (the peer's, from the TLS layer), each 32 bytes or None. The
server fingerprint and the client fingerprint both enter the digests. A
CPython client cannot tell whether its certificate was requested, so A's Hello
states the client fingerprint A saw; D refuses it if it names a certificate D
did not present. A man in the middle that terminates TLS must present its own
certificate to at least one side, so the digests disagree and the handshake
fails with reason ``"tls binding mismatch"``.

**Use.** Feed bytes with ``receive_data``; call ``next_event`` until it
returns :data:`NEED_DATA`; after every call write out ``data_to_send()``.
Answer a :class:`PeerIntroduced` or :class:`JoinRequested` before calling
``next_event`` again. Once :class:`HandshakeComplete` or :class:`JoinComplete` comes out, bytes that
followed the last handshake message are in ``trailing_data`` (the first
frames; hand them to the frame decoder). A :class:`Refused` event means we
refused the peer: send ``data_to_send()`` (the Reject) and close.

Malformed or unexpected messages raise ``gen.RemoteProtocolError`` (call
``reject()`` for a Reject to send); a message above the size limit raises
``gen.ErrTooLarge`` before its body is buffered. **Timeouts are the
transport's business**: the machine has no clock; the transport bounds the
whole handshake (``handshake_timeout``) and may send ``reject("timeout")``.

**Layout.** ``types`` (constants, events, states), ``wire`` (framing,
digests, the connection id), ``machine`` (what every machine shares), then
one module per role: ``dial`` (:class:`DialerHandshake`), ``accept``
(:class:`AcceptorHandshake`), ``join`` (:class:`JoinHandshake`).
"""

from ergo_py.net.handshake.accept import AcceptorHandshake
from ergo_py.net.handshake.dial import DialerHandshake
from ergo_py.net.handshake.join import JoinHandshake
from ergo_py.net.handshake.types import (
    FINGERPRINT_SIZE,
    HEADER_SIZE,
    MAGIC,
    MSG_ACCEPT,
    MSG_HELLO,
    MSG_INTRODUCE,
    MSG_JOIN,
    MSG_REJECT,
    NEED_DATA,
    REASON_BAD_COOKIE,
    REASON_BUSY,
    REASON_NAME_TAKEN,
    REASON_PROTOCOL,
    REASON_SIMULTANEOUS,
    REASON_TIMEOUT,
    REASON_TLS_BINDING,
    REASON_UNKNOWN_CONNECTION,
    REASON_WRONG_NODE,
    SALT_SIZE,
    VERSION,
    AdmissionEvent,
    Event,
    HandshakeComplete,
    HandshakeState,
    JoinComplete,
    JoinRequested,
    PeerIntroduced,
    Refused,
    Rejected,
)
from ergo_py.net.handshake.wire import connection_id, reject_message

__all__ = [
    "FINGERPRINT_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "MSG_ACCEPT",
    "MSG_HELLO",
    "MSG_INTRODUCE",
    "MSG_JOIN",
    "MSG_REJECT",
    "NEED_DATA",
    "REASON_BAD_COOKIE",
    "REASON_BUSY",
    "REASON_NAME_TAKEN",
    "REASON_PROTOCOL",
    "REASON_SIMULTANEOUS",
    "REASON_TIMEOUT",
    "REASON_TLS_BINDING",
    "REASON_UNKNOWN_CONNECTION",
    "REASON_WRONG_NODE",
    "SALT_SIZE",
    "VERSION",
    "AcceptorHandshake",
    "AdmissionEvent",
    "DialerHandshake",
    "Event",
    "HandshakeComplete",
    "HandshakeState",
    "JoinComplete",
    "JoinHandshake",
    "JoinRequested",
    "PeerIntroduced",
    "Refused",
    "Rejected",
    "connection_id",
    "reject_message",
]
