"""Node, network and acceptor options, and the defaults Ergo uses.

Every constant has one home, here, named as Ergo names it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ergo_py.gen.certmanager import CertManager
    from ergo_py.gen.registrar import Registrar

DEFAULT_PORT = 11144
DEFAULT_PORT_RANGE = 50
DEFAULT_REGISTRAR_PORT = 4499
DEFAULT_REQUEST_TIMEOUT = 5.0
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_KEEPALIVE_PERIOD = 15.0
POOL_GROW_AFTER = 1000
KEEPALIVE_MISSES = 3
DEFAULT_POOL_SIZE = 3
DEFAULT_MAX_HANDSHAKES = 64
# Accepted connections still in their TLS handshake (anyone can open one, so
# this budget is separate from max_handshakes, larger, and shared fairly by
# source address), and how long one may stay there.
DEFAULT_MAX_PRE_TLS = 256
DEFAULT_MAX_PRE_TLS_PER_SOURCE = 32
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 2.0
DEFAULT_HANDSHAKE_MAX_MESSAGE_SIZE = 65535
# Frames over this are refused from their length prefix, before any of the
# body is buffered. Ergo's default is 0 (unlimited): one trusted peer could
# then make a node buffer a 4 GiB frame. 0 still means unlimited.
DEFAULT_MAX_MESSAGE_SIZE = 64 << 20
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
DEFAULT_TERMINATE_TIMEOUT = 5.0
MAX_NODE_NAME_BYTES = 255
DEFAULT_CERT_EXPIRY_MARGIN = timedelta(days=7)
DEFAULT_CERT_CHECK_INTERVAL = 60.0


class NetworkMode(enum.IntEnum):
    """Ergo's network modes."""

    ENABLED = 0
    HIDDEN = 1  # dials out, no acceptor, no registration
    DISABLED = -1  # no network at all


class NetworkFlags(enum.IntFlag):
    """Features a node offers its peers; one is used only if both offer it."""

    ENABLE = 1
    ENABLE_REMOTE_SPAWN = 2
    ENABLE_REMOTE_APPLICATION_START = 4
    ENABLE_FRAGMENTATION = 8
    ENABLE_PROXY_TRANSIT = 16
    ENABLE_PROXY_ACCEPT = 32
    ENABLE_IMPORTANT_DELIVERY = 64
    ENABLE_SIMULTANEOUS_CONNECT = 128


DEFAULT_NETWORK_FLAGS = (
    NetworkFlags.ENABLE
    | NetworkFlags.ENABLE_REMOTE_SPAWN
    | NetworkFlags.ENABLE_IMPORTANT_DELIVERY
    | NetworkFlags.ENABLE_SIMULTANEOUS_CONNECT
)


# Wire dialects an acceptor or a route may speak (``protocol=``).
PROTOCOL_ERGO_PY = "ergo_py"
PROTOCOL_ERGO = "ergo"
PROTOCOLS = (PROTOCOL_ERGO_PY, PROTOCOL_ERGO)


@dataclass
class AcceptorOptions:
    """One listening socket.

    ``cert_manager``: None inherits the node's; ``tls=False`` makes a plain
    acceptor even on a TLS node (Ergo cannot express that).
    ``cookie``: None inherits the node's (Ergo ignores a per-acceptor cookie).

    Admission, in two stages each with its own budget and deadline: at most
    ``max_pre_tls`` accepted connections may be in their TLS handshake at once,
    at most ``max_pre_tls_per_source`` from one source address (an IPv6 /64
    is one source), each for at most ``tls_handshake_timeout`` seconds; a
    newcomer is always let in, and the oldest connection of its own source
    (over its share) or of the source holding the most (budget full) is cut
    instead. Past TLS, ``max_handshakes`` links may be in the Ergo handshake
    (``handshake_timeout`` each); beyond that a link is refused "busy".
    A plain-TCP acceptor has only the second stage.
    """

    host: str = ""
    port: int = DEFAULT_PORT
    port_range: int = DEFAULT_PORT_RANGE
    cert_manager: CertManager | None = None
    tls: bool | None = None
    cookie: str | None = None
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_pre_tls: int = DEFAULT_MAX_PRE_TLS
    max_pre_tls_per_source: int = DEFAULT_MAX_PRE_TLS_PER_SOURCE
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    handshake_max_message_size: int = DEFAULT_HANDSHAKE_MAX_MESSAGE_SIZE
    max_message_size: int | None = None
    route_host: str = ""
    route_port: int = 0
    # "ergo": Go Ergo nodes connect here, in Ergo's own handshake and framing
    # (docs/interop.md); the default is ours, which binds both certificates.
    protocol: str = PROTOCOL_ERGO_PY


@dataclass
class NetworkOptions:
    """How the node talks to other nodes."""

    mode: NetworkMode = NetworkMode.ENABLED
    cookie: str = ""
    flags: NetworkFlags = DEFAULT_NETWORK_FLAGS
    acceptors: list[AcceptorOptions] = field(default_factory=list)
    insecure_skip_verify: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    pool_size: int = DEFAULT_POOL_SIZE
    # Open the pool's extra links only once the connection is busy (it has
    # carried POOL_GROW_AFTER frames), not at connect time: an idle or short
    # connection then costs one TLS handshake and one link instead of three.
    pool_on_demand: bool = True
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    registrar_port: int = DEFAULT_REGISTRAR_PORT
    registrar_enabled: bool = True
    # Where the registrar (when this node serves it) answers resolutions from
    # other hosts, over UDP on the registrar port: "" = the first acceptor's
    # host, "0.0.0.0" = every interface (Ergo's choice), None = not at all.
    registrar_resolve_host: str | None = ""
    # Where the node registers and resolves: any ``net.Registrar`` (one object
    # per node; the node starts it, resolves through it and closes it).
    # None = the embedded one, set up by the registrar_* options above.
    # registrar_enabled=False turns off every registrar: static routes only.
    registrar: Registrar | None = None
    # Node identity under TLS: a verified peer certificate must name the node
    # the peer claims (URI SAN ergo://name@host). With ``identity_host_fallback``
    # a certificate without such URIs passes if a DNS/IP SAN matches the host.
    verify_node_identity: bool = True
    identity_host_fallback: bool = False
    # A link with nothing to send for this long sends a Keepalive frame; one
    # that hears nothing for KEEPALIVE_MISSES periods is dead (a peer whose
    # host vanished never sends a FIN). 0 turns both off.
    keepalive_period: float = DEFAULT_KEEPALIVE_PERIOD


@dataclass
class MetricsOptions:
    """Where the node serves ``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz``.

    Served by a ``meta.WebServer`` on the node: over HTTPS with the node's
    cert manager when it has one (``tls=None``), plain HTTP otherwise or with
    ``tls=False``. ``port=0`` picks a free port (``node.metrics_port()``).
    Needs the ``metrics`` extra (prometheus-client, Hypercorn).
    """

    host: str = "127.0.0.1"
    port: int = 9090
    tls: bool | None = None


@dataclass
class ObserverOptions:
    """Where the node serves its observer page (``/``) and its data (``/observer.json``).

    Served by a ``meta.WebServer`` on the node, like ``options.metrics``:
    over HTTPS when there is a cert manager (``tls=None``), plain HTTP
    otherwise or with ``tls=False``. ``cert_manager``: the web server's own
    (default: the node's). A browser has no client certificate, so a node
    whose manager requires one (``REQUIRE_AND_VERIFY_CLIENT_CERT``) refuses
    it: either install a client certificate from the cluster's CA in the
    browser, or give the observer a manager of its own with a weaker client
    auth (anyone who reaches ``host:port`` then reads the page; it is
    read-only, and ``host`` defaults to loopback). ``port=0`` picks a free
    port (``node.observer_port()``). ``events``: how many recent node events
    the page lists. Needs the ``metrics`` extra (Hypercorn).
    """

    host: str = "127.0.0.1"
    port: int = 9911
    tls: bool | None = None
    cert_manager: CertManager | None = None
    events: int = 50


@dataclass
class NodeOptions:
    """Everything ``start_node`` takes besides the name.

    ``cert_expiry_margin``: a certificate (our own or a peer's) expiring
    within it is announced (``gen.EventCertExpiring``, again at 1 day and 1
    hour), and our own makes ``node.health()`` not ready. The check runs
    every ``cert_check_interval`` seconds on the network loop (0: never).
    """

    cert_manager: CertManager | None = None
    network: NetworkOptions = field(default_factory=NetworkOptions)
    env: dict[str, Any] = field(default_factory=dict)
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    metrics: MetricsOptions | None = None
    observer: ObserverOptions | None = None
    cert_expiry_margin: timedelta = DEFAULT_CERT_EXPIRY_MARGIN
    cert_check_interval: float = DEFAULT_CERT_CHECK_INTERVAL


@dataclass
class ProcessOptions:
    """Per-process spawn options."""

    link_parent: bool = False
    env: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkRoute:
    """Where to dial a node, for ``network.add_route`` (a static route).

    ``tls``: None follows the node (TLS when it has a cert manager).
    ``cookie``: None uses the node's. A route's settings are never silently
    overridden by node-wide ones. ``protocol="ergo"``: the node is a Go Ergo
    node (docs/interop.md).
    """

    host: str = ""
    port: int = DEFAULT_PORT
    tls: bool | None = None
    cookie: str | None = None
    protocol: str = PROTOCOL_ERGO_PY
