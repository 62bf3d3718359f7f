"""Public types and interfaces (Ergo's ``gen``)."""

from ergo_py.gen.errors import (
    CertificateError,
    ErgoError,
    ErrIncorrect,
    ErrNameUnknown,
    ErrNoConnection,
    ErrNodeTerminated,
    ErrNoRoute,
    ErrNotAllowed,
    ErrProcessIncarnation,
    ErrProcessTerminated,
    ErrProcessUnknown,
    ErrTaken,
    ErrTimeout,
    ErrTooLarge,
    ErrUnsupported,
    ErrUnsupportedType,
    HandshakeRejected,
    LocalProtocolError,
    NodeError,
    ProtocolError,
    RemoteProtocolError,
)
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.gen.options import (
    DEFAULT_NETWORK_FLAGS,
    DEFAULT_POOL_SIZE,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    AcceptorOptions,
    NetworkFlags,
    NetworkMode,
    NetworkOptions,
    NodeOptions,
    ProcessOptions,
)
from ergo_py.gen.types import register_type

# --- certificates (gen/cert.py, gen/certmanager.py) ---
# --- end certificates ---

# --- node (gen/node.py, gen/messages.py) ---
# --- end node ---

__all__ = [name for name in dir() if not name.startswith("_")]
