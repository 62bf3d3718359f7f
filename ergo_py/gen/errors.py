"""Every exception ergo_py raises on purpose derives from :class:`ErgoError`.

Go's sentinel errors (``gen.ErrTimeout`` ...) become exception classes, so
``except gen.ErrTimeout`` reads like Go's ``errors.Is(err, gen.ErrTimeout)``.
A reason carried in an exit or down message may be one of these instances.
"""

from __future__ import annotations


class ErgoError(Exception):
    """Base of every error the package raises on purpose."""


class NodeError(ErgoError):
    """A bad node name or bad node options; the node was not started."""


class CertificateError(ErgoError):
    """A certificate, key or CA pool that cannot be used.

    Raised by loaders and by ``CertManager.update()``; the manager keeps what
    it had before.
    """


class ErrTimeout(ErgoError):
    """No answer within the timeout."""


class ErrNoConnection(ErgoError):
    """The peer node cannot be reached, or the connection to it was lost."""


class ErrProcessUnknown(ErgoError):
    """No such process (never existed, or already ended)."""


class ErrProcessTerminated(ErgoError):
    """The process ended while the caller waited for it."""


class ErrProcessIncarnation(ErgoError):
    """The identifier belongs to an earlier incarnation (creation) of its node."""


class ErrNameUnknown(ErgoError):
    """No process is registered under that name."""


class ErrTaken(ErgoError):
    """The name (or route) is already taken."""


class ErrNotAllowed(ErgoError):
    """The operation is refused by policy (remote spawn, flags, ...)."""


class ErrTooLarge(ErgoError):
    """The message is larger than the receiver accepts."""


class ErrNoRoute(ErgoError):
    """No static route and no registrar entry for the node."""


class ErrUnsupported(ErgoError):
    """The feature is not supported (by this node or by the peer)."""


class ErrIncorrect(ErgoError):
    """An argument or a value that cannot be right."""


class ErrNodeTerminated(ErgoError):
    """The node has been stopped."""


class ErrUnsupportedType(ErgoError):
    """A message contains a value that cannot cross the wire.

    Register dataclasses with ``gen.register_type``.
    """


class ErrTooDeep(ErrUnsupportedType):
    """A message nests deeper than the codec allows (see ``ergo_py.net.codec``).

    Raised at the sender; a peer that sends such a term breaks the protocol
    (``RemoteProtocolError`` at the receiver).
    """


class ProtocolError(ErgoError):
    """A handshake or frame that breaks the protocol."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol (a malformed or unexpected message)."""


class ImpersonationError(RemoteProtocolError):
    """A frame that speaks for a process of another node than the link's peer.

    A link carries only its own peer's processes: senders, link and monitor
    holders, exiting and downed targets. Anything else is a forgery (or a
    broken peer); the link is closed.
    """

    def __init__(self, frame: str, sender: object, peer: str) -> None:
        super().__init__(f"{frame} frame from {peer} speaks for {sender!r}, not one of its own")
        self.frame = frame
        self.sender = sender
        self.peer = peer


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids in this state."""


class HandshakeRejected(ProtocolError):
    """The handshake ended with a rejection; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Pythonic names for the Go-style ones: the same classes, so ``except
# gen.NoConnectionError`` and ``except gen.ErrNoConnection`` catch the same
# thing. The Ergo names stay the primary ones (they match Ergo's docs).
ErgoTimeoutError = ErrTimeout  # not "TimeoutError": that would shadow the builtin
NoConnectionError = ErrNoConnection
ProcessUnknownError = ErrProcessUnknown
ProcessTerminatedError = ErrProcessTerminated
ProcessIncarnationError = ErrProcessIncarnation
NameUnknownError = ErrNameUnknown
AlreadyTakenError = ErrTaken
NotAllowedError = ErrNotAllowed
MessageTooLargeError = ErrTooLarge
NoRouteError = ErrNoRoute
UnsupportedError = ErrUnsupported
IncorrectValueError = ErrIncorrect
NodeTerminatedError = ErrNodeTerminated
UnsupportedTypeError = ErrUnsupportedType
NestingTooDeepError = ErrTooDeep

PYTHONIC_NAMES = {
    "ErrTimeout": "ErgoTimeoutError",
    "ErrNoConnection": "NoConnectionError",
    "ErrProcessUnknown": "ProcessUnknownError",
    "ErrProcessTerminated": "ProcessTerminatedError",
    "ErrProcessIncarnation": "ProcessIncarnationError",
    "ErrNameUnknown": "NameUnknownError",
    "ErrTaken": "AlreadyTakenError",
    "ErrNotAllowed": "NotAllowedError",
    "ErrTooLarge": "MessageTooLargeError",
    "ErrNoRoute": "NoRouteError",
    "ErrUnsupported": "UnsupportedError",
    "ErrIncorrect": "IncorrectValueError",
    "ErrNodeTerminated": "NodeTerminatedError",
    "ErrUnsupportedType": "UnsupportedTypeError",
    "ErrTooDeep": "NestingTooDeepError",
}
"""Each Ergo-named error and its Pythonic alias (for docs and the test that keeps them whole)."""
