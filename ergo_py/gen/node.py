"""The node's public interfaces, and the seam between the node and its network.

``Node``, ``Network`` and ``RemoteNode`` are what users hold. The node runtime
(``ergo_py.node``) implements ``Node``; the network layer implements
``NetworkBackend`` and ``Network``, and talks back to the node only through
``NodeRouter``. Neither side imports the other: both import these interfaces.

Addressing: a *target* is a ``PID``, a ``ProcessID``, an ``Alias``, or a plain
``str`` naming a process registered on the local node.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import ErgoError, ErrUnsupported
from ergo_py.gen.events import Health
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.gen.meta import MetaBehavior
from ergo_py.gen.options import DEFAULT_REQUEST_TIMEOUT, ProcessOptions
from ergo_py.gen.registrar import Registrar

Target = PID | ProcessID | Alias | str
"""Anything a message, call, link or monitor may be addressed to."""

RemoteTarget = PID | ProcessID | Alias
"""A target on another node (never a bare name: that one is always local)."""

ActorFactory = Callable[[], Any]
"""Builds the behaviour of a new process (usually an ``act.Actor`` subclass)."""


class NamedNode:
    """A node's name and creation stamp, answered from ``_name``/``_creation``
    (set by the subclass, or the properties overridden)."""

    _name: Atom
    _creation: int

    @property
    def name(self) -> Atom:
        """``name@host``."""
        return self._name

    @property
    def creation(self) -> int:
        """The stamp carried in the node's PIDs, refs and aliases (a peer's: as it
        introduced itself)."""
        return self._creation


class RemoteNode(NamedNode, abc.ABC):
    """A connected peer node, from ``Network.get_node``."""

    @abc.abstractmethod
    def spawn(self, name: str, *args: Any, options: ProcessOptions | None = None) -> PID:
        """Start a process the peer enabled for remote spawn under ``name``."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Close the connection; links and monitors on the peer fire with reason normal."""


@dataclass(frozen=True, slots=True)
class AcceptorInfo:
    """One listening acceptor, as bound (``Network.acceptors``).

    ``port`` is the port actually bound (an acceptor configured with port 0
    or a port range tells here which one it got). ``cert_version`` is the
    version of the certificate its cert manager holds now (None: plain TCP).
    The admission budgets are those of ``gen.AcceptorOptions`` (the
    ``pre_tls`` ones and ``tls_handshake_timeout`` apply to TLS acceptors).
    """

    host: str
    port: int
    tls: bool
    cert_version: int | None
    max_message_size: int
    max_handshakes: int
    handshake_timeout: float
    max_pre_tls: int
    max_pre_tls_per_source: int
    tls_handshake_timeout: float
    protocol: str = "ergo_py"  # or "ergo": Go Ergo nodes connect here


class Network(abc.ABC):
    """The node's view of its peers (``node.network()``)."""

    @abc.abstractmethod
    def get_node(self, name: str) -> RemoteNode:
        """The peer called ``name``, connecting first if needed (``ErrNoConnection``)."""

    @abc.abstractmethod
    def nodes(self) -> list[str]:
        """Names of the peers connected now."""

    @abc.abstractmethod
    def info(self, name: str) -> Any:
        """Details of the connection to ``name`` (``ErrNoConnection`` if there is none)."""

    @abc.abstractmethod
    def add_route(self, match: str, route: Any, weight: int = 0) -> None:
        """Add a static route for node names matching the regexp ``match``."""

    def remove_route(self, match: str) -> None:
        """Remove the static route added with ``match`` (``ErrNoRoute`` if there is none).

        As Ergo's ``RemoveRoute``; a connection already up stays up.
        """
        raise ErrUnsupported("this node has no network")

    @abc.abstractmethod
    def disconnect(self, name: str) -> None:
        """Close the connection to ``name`` (gracefully: what is in flight arrives).

        Links and monitors towards ``name`` fire and pending calls fail with
        ``ErrNoConnection``; the next send connects again.
        """

    def reconnect(self, name: str) -> None:
        """Move the connection to ``name`` onto a new one made with the current certificates.

        Without a gap and invisible to actors: nothing in flight is lost or
        reordered; links, monitors and pending calls carry on.
        """
        raise ErrUnsupported("this node has no network")

    def registrar(self) -> Registrar | None:
        """The registrar this node registers with and resolves through (None: none).

        ``NetworkOptions.registrar`` if set, else the embedded one. A hidden
        node, or one whose registration failed, only resolves through it.
        """
        return None

    def acceptors(self) -> list[AcceptorInfo]:
        """The acceptors listening now, in the order they were configured."""
        return []

    def enable_spawn(self, name: str, factory: ActorFactory, *nodes: str) -> None:
        """Let ``nodes`` (all nodes when none are named) spawn ``factory`` here as ``name``.

        Remote spawn is off until enabled, as in Ergo's ``EnableSpawn``.
        """
        raise ErrUnsupported("this node has no network")

    def disable_spawn(self, name: str, *nodes: str) -> None:
        """Withdraw ``enable_spawn`` for ``nodes`` (for every node when none are named)."""
        raise ErrUnsupported("this node has no network")


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    """A local spawn as it goes from a face (the node, an actor, the router
    answering a remote request) to the core: ``factory(*args)``, registered
    as ``name`` unless None."""

    factory: ActorFactory
    args: tuple[Any, ...] = ()
    options: ProcessOptions | None = None
    name: str | None = None


class Spawning:
    """``spawn`` / ``spawn_register`` for whoever spawns on behalf of one
    process (a node's core process, an actor): both are ``_spawn(spec)``."""

    def spawn(
        self, factory: ActorFactory, *args: Any, options: ProcessOptions | None = None
    ) -> PID:
        """Start a process; returns once its ``init(*args)`` has run (its error is raised).

        From an actor, the new process is its child (``options.link_parent``
        links the two)."""
        return self._spawn(SpawnSpec(factory, args, options))

    def spawn_register(
        self,
        name: str,
        factory: ActorFactory,
        *args: Any,
        options: ProcessOptions | None = None,
    ) -> PID:
        """Start a process registered as ``name`` (``ErrTaken`` if the name is in use)."""
        return self._spawn(SpawnSpec(factory, args, options, name))

    def _spawn(self, spec: SpawnSpec) -> PID:
        raise ErrUnsupported(f"{type(self).__name__} cannot spawn")


class NodeIdentity(NamedNode):
    """Who the local node is: what its user face, its router and a process
    node's proxy all answer the same way, from ``_name``/``_creation``/``_pid``
    set by the subclass before use."""

    _pid: PID

    @property
    def pid(self) -> PID:
        """The node's core process: the sender of ``node.send`` / ``node.call``."""
        return self._pid


class Node(NodeIdentity, Spawning, AbstractContextManager["Node"]):
    """A running node: its processes, names, and the way out to other nodes.

    Every method is thread-safe. Methods called from outside any process act
    on behalf of the node's core process (``node.pid``).
    """

    @abc.abstractmethod
    def register_name(self, name: str, pid: PID) -> None:
        """Register a local process under ``name`` (``ErrTaken``, ``ErrProcessUnknown``)."""

    @abc.abstractmethod
    def unregister_name(self, name: str) -> PID:
        """Drop a registered name; returns the PID it named (``ErrNameUnknown``)."""

    @abc.abstractmethod
    def where_is(self, name: str) -> PID | None:
        """The local process registered as ``name``, or None."""

    @abc.abstractmethod
    def send(self, to: Target, message: Any) -> None:
        """Deliver ``message`` (a copy) to ``to``; see ``act.Actor.send``."""

    @abc.abstractmethod
    def call(self, to: Target, request: Any, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Make a synchronous request; see ``act.Actor.call``."""

    @abc.abstractmethod
    def send_exit(self, to: Target, reason: Any) -> None:
        """Send an exit signal: ``to`` ends with ``reason`` unless it traps exits.

        ``TERMINATE_REASON_KILL`` cannot be trapped.
        """

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """False once ``stop()`` has begun."""

    @abc.abstractmethod
    def network(self) -> Network:
        """The node's network."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process (their ``terminate`` runs) and the network.

        Bounded by ``NodeOptions.shutdown_timeout``; idempotent; thread-safe.
        """

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the node has stopped; False if ``timeout`` passed first."""

    # Meta-processes (``ergo_py.meta``): not abstract, so a node that does not
    # host them (a handle on a node in another process) need not say so twice.

    def cert_manager(self) -> CertManager | None:
        """The node's certificate manager (None: plain TCP); meta-processes' default."""
        raise ErrUnsupported(f"{type(self).__name__} has no cert manager to offer")

    def spawn_meta(self, behavior: MetaBehavior) -> Alias:
        """Start a meta-process; returns its alias once it is serving.

        It ends with the node, or with :meth:`send_exit_meta`. Whatever kept
        it from serving (a port in use, no certificate) is raised here.
        """
        raise ErrUnsupported(f"{type(self).__name__} does not host meta-processes")

    def send_exit_meta(self, alias: Alias, reason: Any = None) -> None:
        """End the meta-process ``alias`` (its listener and connections close).

        Returns once it has ended (bounded by the node's shutdown timeout),
        unless called from that meta-process itself. ``ErrProcessUnknown``
        if ``alias`` names no meta-process of this node.
        """
        raise ErrUnsupported(f"{type(self).__name__} does not host meta-processes")

    # Observability (``node/observe.py``): not abstract either.

    def subscribe(self, pid: PID, *event_types: type) -> None:
        """``pid`` receives node events (``gen.Event*``) as messages; no types: all.

        Subscribing again replaces the types. Local processes only.
        """
        raise ErrUnsupported(f"{type(self).__name__} has no events")

    def unsubscribe(self, pid: PID) -> None:
        """``pid`` receives no more node events."""
        raise ErrUnsupported(f"{type(self).__name__} has no events")

    def health(self) -> Health:
        """Whether the node is ready, and why not."""
        raise ErrUnsupported(f"{type(self).__name__} has no health check")

    def metrics_port(self) -> int | None:
        """The port ``options.metrics`` is served on (None: not served)."""
        return None

    def observer_port(self) -> int | None:
        """The port ``options.observer`` is served on (None: not served)."""
        return None

    def observer_snapshot(self) -> dict[str, Any]:
        """What the observer page shows, as plain JSON data (``docs/observe.md``)."""
        raise ErrUnsupported(f"{type(self).__name__} has no observer snapshot")


@dataclass(frozen=True, slots=True)
class RemoteSpawnRequest:
    """One remote spawn, as it goes from the asking process to the backend:
    start the factory the peer ``node`` enabled as ``name`` with ``args``,
    registered there as ``register`` when not empty."""

    node: str
    name: str
    args: tuple[Any, ...]
    options: ProcessOptions
    register: str = ""


class SendBatch:
    """Messages from one remote process to one recipient that arrived together.

    What a link's decoder makes of a send batch frame (a burst the sender's
    writer merged, see ``net/frames/layouts.py``), and what goes into the
    recipient's mailbox as it is: one object and one put for the burst,
    instead of a ``(sender, to, message)`` tuple and a routing step per
    message. ``messages`` are in the order they were sent; the process
    hands them to ``handle_message`` one by one, so an actor cannot tell a
    batch from single sends. (A plain slotted class: this is the hot path.)
    """

    __slots__ = ("messages", "sender", "to")

    def __init__(self, sender: PID, to: RemoteTarget, messages: list[Any]) -> None:
        self.sender = sender
        self.to = to
        self.messages = messages

    def __repr__(self) -> str:
        return f"SendBatch({self.sender!r}, {self.to!r}, {self.messages!r})"


class NetworkBackend(abc.ABC):
    """What the node calls for every operation whose target is on another node.

    Each method may raise ``ErrNoConnection`` (no route, or the connection
    cannot be made), ``ErrUnsupportedType`` (a value that cannot be encoded)
    or ``ErrTooLarge``; the node passes those to the caller. Anything that
    arrives later (replies, exits, downs) comes back through ``NodeRouter``.
    Methods are called from process threads, concurrently.
    """

    @abc.abstractmethod
    def send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        """Send ``message``; per (sender, recipient) order must be kept."""

    @abc.abstractmethod
    def call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        """Send a call request; the answer must come back as ``NodeRouter.route_reply(ref)``.

        The node has registered the reply slot before this is called.
        """

    @abc.abstractmethod
    def reply(
        self, from_pid: PID, to: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        """Answer a call that arrived through ``NodeRouter.route_call``."""

    @abc.abstractmethod
    def link(self, from_pid: PID, target: RemoteTarget) -> None:
        """Ask the target's node to tell us (``route_exit``) when ``target`` ends."""

    @abc.abstractmethod
    def unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        """Undo ``link``."""

    @abc.abstractmethod
    def monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        """Ask the target's node to tell us (``route_down``) when ``target`` ends."""

    @abc.abstractmethod
    def demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        """Undo ``monitor``."""

    @abc.abstractmethod
    def exit(
        self, from_target: RemoteTarget, to: PID, reason: Any, ended: PID | None = None
    ) -> None:
        """Deliver an exit signal to remote ``to``.

        Sent when a local process that ``to`` linked ends (``from_target`` is
        the identifier ``to`` linked: PID, ProcessID or Alias) and for
        ``send_exit`` (``from_target`` is the sender's PID). ``ended``: the
        process that ended, when known, so the signal queues behind the
        messages it sent (Erlang's pairwise order) even when ``to`` linked
        a name or an alias.
        """

    @abc.abstractmethod
    def down(
        self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any, ended: PID | None = None
    ) -> None:
        """Deliver a down for monitor ``ref`` held by remote ``to`` (``ended``: as for exit)."""

    @abc.abstractmethod
    def spawn(self, from_pid: PID, order: RemoteSpawnRequest) -> PID:
        """Start a process on ``order.node`` (``ErrNotAllowed``, ``ErrNameUnknown``, ...)."""

    @abc.abstractmethod
    def connect(self, node: str) -> None:
        """Make sure a connection to ``node`` is up (``ErrNoConnection`` otherwise)."""

    @abc.abstractmethod
    def network(self) -> Network:
        """The user-facing view of this backend."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Close everything; called once, by ``Node.stop()`` after the processes ended."""


class NodeRouter(NodeIdentity, abc.ABC):
    """The node's entry points for what arrives from the network.

    The backend calls these from its own threads; each returns quickly (it
    only queues work for processes) and is thread-safe. Identifiers named
    ``to``/``target`` are local; ``from_*`` are remote.
    """

    @abc.abstractmethod
    def route_send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        """Deliver a message from a remote sender.

        Raises ``ErrProcessUnknown`` / ``ErrProcessIncarnation`` when there is
        no such local process (the backend may drop it silently, as Ergo does).
        """

    def route_sends(
        self, sends: Sequence[tuple[PID, RemoteTarget, Any]]
    ) -> list[tuple[int, ErgoError]]:
        """Deliver a burst of ``(from_pid, to, message)`` in arrival order.

        Same as ``route_send`` for each, except that a node may hand a
        recipient's share of the burst to its mailbox in one go (one wake-up
        instead of one per message); each sender's order per recipient is kept.
        Returns the messages not delivered, as (index in ``sends``, error).
        """
        failed: list[tuple[int, ErgoError]] = []
        for i, (from_pid, to, message) in enumerate(sends):
            try:
                self.route_send(from_pid, to, message)
            except ErgoError as exc:
                failed.append((i, exc))
        return failed

    def route_batch(self, batch: SendBatch) -> None:
        """Deliver ``batch.messages`` from ``batch.sender`` to ``batch.to``, in order.

        Same as ``route_send`` for each (a node may queue the batch in the
        recipient's mailbox as one envelope). Raises as ``route_send`` when
        there is no such local process: then none of them is delivered.
        """
        sender, to = batch.sender, batch.to
        for message in batch.messages:
            self.route_send(sender, to, message)

    @abc.abstractmethod
    def route_call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        """Deliver a call request from a remote caller.

        The answer always goes back through ``NetworkBackend.reply`` — the
        value, or an error: ``ErrProcessUnknown`` at once for a missing target,
        ``ErrProcessTerminated`` when the target ends before answering.
        """

    @abc.abstractmethod
    def route_reply(self, from_pid: PID, ref: Ref, value: Any, error: BaseException | None) -> bool:
        """The answer from ``from_pid`` to a pending call made by a local process.

        Only a call made to ``from_pid``'s node is answered (the network has
        checked that the reply came over that node's link). A reply nobody
        waits for any more (timed out, failed) is discarded; False then, and
        for a reply that names another node's call.
        """

    @abc.abstractmethod
    def route_link(self, from_pid: PID, target: RemoteTarget) -> None:
        """A remote process links a local one.

        If the target does not exist, an exit with reason ``ErrProcessUnknown``
        goes back at once through ``NetworkBackend.exit``.
        """

    @abc.abstractmethod
    def route_unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        """Undo ``route_link``; unknown links are ignored."""

    @abc.abstractmethod
    def route_monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        """A remote process monitors a local one (down with ``ErrProcessUnknown`` if missing)."""

    @abc.abstractmethod
    def route_demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        """Undo ``route_monitor``; unknown monitors are ignored."""

    @abc.abstractmethod
    def route_exit(self, from_target: RemoteTarget, to: PID, reason: Any) -> None:
        """An exit signal for local ``to``: a process it linked ended, or a remote ``send_exit``.

        The link record (if any) is dropped; ``to`` gets ``MessageExit*`` if it
        traps exits, else ends with ``reason``. Queued behind earlier messages
        from the same sender.
        """

    @abc.abstractmethod
    def route_down(self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any) -> None:
        """A process monitored by local ``to`` (monitor ``ref``) ended."""

    @abc.abstractmethod
    def route_spawn(self, parent: PID, spec: SpawnSpec) -> PID:
        """Start a local process for a remote node's spawn request (with its options).

        The backend has already checked that the factory is enabled for that
        node. This blocks until the process's ``init`` returned (so call it
        off the event loop) and raises what ``init`` raised.
        """

    @abc.abstractmethod
    def route_node_down(self, name: str, reason: Any = None) -> None:
        """The connection to node ``name`` is gone.

        Every local link/monitor on its processes and on the node itself fires
        (``MessageExitNode`` / ``MessageDownNode`` for the node); every pending
        call to it fails at once; remote links/monitors its processes held on
        local ones are dropped. ``reason`` defaults to ``ErrNoConnection()``.
        """
