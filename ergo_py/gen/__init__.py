"""Public types and interfaces (Ergo's ``gen``)."""

from ergo_py.gen.errors import (
    AlreadyTakenError,
    CertificateError,
    ErgoError,
    ErgoTimeoutError,
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
    ErrTooDeep,
    ErrTooLarge,
    ErrUnsupported,
    ErrUnsupportedType,
    HandshakeRejected,
    ImpersonationError,
    IncorrectValueError,
    LocalProtocolError,
    MessageTooLargeError,
    NameUnknownError,
    NestingTooDeepError,
    NoConnectionError,
    NodeError,
    NodeTerminatedError,
    NoRouteError,
    NotAllowedError,
    ProcessIncarnationError,
    ProcessTerminatedError,
    ProcessUnknownError,
    ProtocolError,
    RemoteProtocolError,
    UnsupportedError,
    UnsupportedTypeError,
)
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.gen.options import (
    DEFAULT_NETWORK_FLAGS,
    DEFAULT_POOL_SIZE,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    POOL_GROW_AFTER,
    AcceptorOptions,
    MetricsOptions,
    NetworkFlags,
    NetworkMode,
    NetworkOptions,
    NetworkRoute,
    NodeOptions,
    ObserverOptions,
    ProcessOptions,
)
from ergo_py.gen.registrar import Route
from ergo_py.gen.types import register_type

# isort: split
# --- certificates (gen/cert.py, gen/certmanager.py) ---
# "X as X": explicit re-exports, so strict mypy users can write gen.Certificate.
from ergo_py.gen.cert import Certificate as Certificate
from ergo_py.gen.cert import CertPool as CertPool
from ergo_py.gen.cert import ClientAuth as ClientAuth
from ergo_py.gen.cert import PeerCertificate as PeerCertificate
from ergo_py.gen.certmanager import CertAuthManager as CertAuthManager
from ergo_py.gen.certmanager import CertManager as CertManager
from ergo_py.gen.certmanager import CertState as CertState
from ergo_py.gen.certmanager import RetiredPolicy as RetiredPolicy
from ergo_py.gen.certmanager import create_cert_auth_manager as create_cert_auth_manager
from ergo_py.gen.certmanager import create_cert_manager as create_cert_manager
from ergo_py.gen.validate import CertValidationError as CertValidationError

# --- end certificates ---

# isort: split
# --- node (gen/node.py, gen/messages.py) ---
from ergo_py.gen.messages import (
    TERMINATE_REASON_KILL,
    TERMINATE_REASON_NORMAL,
    TERMINATE_REASON_SHUTDOWN,
    MessageDown,
    MessageDownAlias,
    MessageDownNode,
    MessageDownPID,
    MessageDownProcessID,
    MessageExit,
    MessageExitAlias,
    MessageExitNode,
    MessageExitPID,
    MessageExitProcessID,
)
from ergo_py.gen.meta import MetaBehavior
from ergo_py.gen.node import (
    AcceptorInfo,
    ActorFactory,
    Network,
    NetworkBackend,
    Node,
    NodeIdentity,
    NodeRouter,
    RemoteNode,
    RemoteSpawnRequest,
    RemoteTarget,
    SendBatch,
    Spawning,
    SpawnSpec,
    Target,
)

# --- end node ---

# isort: split
# --- events (gen/events.py): the whole module, so its __all__ is ours ---
from ergo_py.gen import events
from ergo_py.gen.events import *  # noqa: F403

# --- end events ---

__all__ = [
    "DEFAULT_NETWORK_FLAGS",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "PID",
    "POOL_GROW_AFTER",
    "TERMINATE_REASON_KILL",
    "TERMINATE_REASON_NORMAL",
    "TERMINATE_REASON_SHUTDOWN",
    "AcceptorInfo",
    "AcceptorOptions",
    "ActorFactory",
    "Alias",
    "AlreadyTakenError",
    "Atom",
    "CertAuthManager",
    "CertManager",
    "CertPool",
    "CertState",
    "CertValidationError",
    "Certificate",
    "CertificateError",
    "ClientAuth",
    "ErgoError",
    "ErgoTimeoutError",
    "ErrIncorrect",
    "ErrNameUnknown",
    "ErrNoConnection",
    "ErrNoRoute",
    "ErrNodeTerminated",
    "ErrNotAllowed",
    "ErrProcessIncarnation",
    "ErrProcessTerminated",
    "ErrProcessUnknown",
    "ErrTaken",
    "ErrTimeout",
    "ErrTooDeep",
    "ErrTooLarge",
    "ErrUnsupported",
    "ErrUnsupportedType",
    "HandshakeRejected",
    "IncorrectValueError",
    "LocalProtocolError",
    "MessageDown",
    "MessageDownAlias",
    "MessageDownNode",
    "MessageDownPID",
    "MessageDownProcessID",
    "MessageExit",
    "MessageExitAlias",
    "MessageExitNode",
    "MessageExitPID",
    "MessageExitProcessID",
    "MessageTooLargeError",
    "MetaBehavior",
    "MetricsOptions",
    "NameUnknownError",
    "NestingTooDeepError",
    "Network",
    "NetworkBackend",
    "NetworkFlags",
    "NetworkMode",
    "NetworkOptions",
    "NetworkRoute",
    "NoConnectionError",
    "NoRouteError",
    "Node",
    "NodeError",
    "NodeIdentity",
    "NodeOptions",
    "NodeRouter",
    "NodeTerminatedError",
    "NotAllowedError",
    "ObserverOptions",
    "PeerCertificate",
    "ProcessID",
    "ProcessIncarnationError",
    "ProcessOptions",
    "ProcessTerminatedError",
    "ProcessUnknownError",
    "ProtocolError",
    "Ref",
    "RemoteNode",
    "RemoteProtocolError",
    "RemoteSpawnRequest",
    "RemoteTarget",
    "RetiredPolicy",
    "Route",
    "SendBatch",
    "SpawnSpec",
    "Spawning",
    "Target",
    "UnsupportedError",
    "UnsupportedTypeError",
    "create_cert_auth_manager",
    "create_cert_manager",
    "register_type",
    *events.__all__,
]
