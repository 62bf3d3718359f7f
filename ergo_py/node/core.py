"""The node: process table, registered names, aliases, routing, calls, links.

Local operations are served here; every operation on another node goes
through the ``gen.NetworkBackend`` given at start, and what arrives from the
network comes in through the ``gen.NodeRouter`` methods (``route_*``).

Locking: ``_lock`` guards the process, name, alias and in-flight tables. A
process leaves the table under that lock before its links and in-flight calls
are collected, and links/calls on a local target are recorded under it after
checking the target is alive, so none is ever missed. Nothing calls out (to a
process mailbox or to the backend) while holding it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ergo_py.act.actor import Actor
from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNameUnknown,
    ErrNoConnection,
    ErrNodeTerminated,
    ErrNotAllowed,
    ErrProcessIncarnation,
    ErrProcessTerminated,
    ErrProcessUnknown,
    ErrTaken,
    NodeError,
)
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref, random_ref_id
from ergo_py.gen.identifiers import make_ref as _ref
from ergo_py.gen.messages import (
    TERMINATE_REASON_KILL,
    TERMINATE_REASON_SHUTDOWN,
    MessageDownAlias,
    MessageDownNode,
    MessageDownPID,
    MessageDownProcessID,
    MessageExitAlias,
    MessageExitNode,
    MessageExitPID,
    MessageExitProcessID,
)
from ergo_py.gen.node import (
    ActorFactory,
    Network,
    NetworkBackend,
    Node,
    NodeRouter,
    RemoteTarget,
    Target,
)
from ergo_py.gen.options import DEFAULT_REQUEST_TIMEOUT, NodeOptions, ProcessOptions
from ergo_py.net import codec
from ergo_py.node.calls import CallTable, Reply
from ergo_py.node.links import Key, LinkTable, NodeKey
from ergo_py.node.process import (
    Deliver,
    Down,
    ExitSignal,
    ProcessActor,
    ProcessState,
    Request,
    Sends,
    Stop,
)

log = logging.getLogger(__name__)

CORE_PROCESS_ID = 1
FIRST_PROCESS_ID = 1000

BackendFactory = Callable[[NodeRouter, NodeOptions], NetworkBackend]

_live_lock = threading.Lock()
_live_names: set[Atom] = set()


def _exit_message(key: Key, reason: Any) -> Any:
    if isinstance(key, NodeKey):
        return MessageExitNode(key.name)
    if isinstance(key, Alias):
        return MessageExitAlias(key, reason)
    if isinstance(key, PID):
        return MessageExitPID(key, reason)
    return MessageExitProcessID(key, reason)


def _down_message(key: Key, ref: Ref, reason: Any) -> Any:
    if isinstance(key, NodeKey):
        return MessageDownNode(key.name, ref)
    if isinstance(key, Alias):
        return MessageDownAlias(key, ref, reason)
    if isinstance(key, PID):
        return MessageDownPID(key, ref, reason)
    return MessageDownProcessID(key, ref, reason)


class Core(Node, NodeRouter):
    """The ``gen.Node`` implementation; also the network's ``gen.NodeRouter``."""

    def __init__(
        self, name: Atom, creation: int, options: NodeOptions, backend_factory: BackendFactory
    ) -> None:
        with _live_lock:
            if name in _live_names:
                raise NodeError(f"a node named {name!r} is already running in this process")
            _live_names.add(name)
        self._name = name
        self._creation = creation
        self._options = options
        self._pid = PID(name, CORE_PROCESS_ID, creation)
        self._lock = threading.RLock()
        self._procs: dict[int, ProcessState] = {}
        self._names: dict[Atom, PID] = {}
        self._aliases: dict[Alias, PID] = {}
        self._inflight: dict[PID, dict[Ref, PID]] = {}
        self._next_id = FIRST_PROCESS_ID
        self._links = LinkTable()
        self._calls = CallTable()
        self._misdirected_from: set[Atom] = set()
        self._stopping = False
        self._stopped = threading.Event()
        try:
            self._backend = backend_factory(self, options)
        except BaseException:
            with _live_lock:
                _live_names.discard(name)
            raise

    # -- identity ----------------------------------------------------------

    @property
    def name(self) -> Atom:
        return self._name

    @property
    def creation(self) -> int:
        return self._creation

    @property
    def pid(self) -> PID:
        return self._pid

    @property
    def options(self) -> NodeOptions:
        """The options the node was started with."""
        return self._options

    def node_of(self) -> Node:
        return self

    def make_ref(self) -> Ref:
        """A fresh reference of this node (96 random bits: unique, and unguessable)."""
        return _ref(self._name, random_ref_id(), self._creation)

    def _check_running(self) -> None:
        if self._stopped.is_set():
            raise ErrNodeTerminated(f"node {self._name} has stopped")

    def is_alive(self) -> bool:
        return not self._stopping

    def network(self) -> Network:
        return self._backend.network()

    def __repr__(self) -> str:
        return f"<Node {self._name} creation={self._creation}>"

    # -- addressing --------------------------------------------------------

    def _norm(self, to: Target) -> RemoteTarget:
        if type(to) is PID or type(to) is ProcessID or type(to) is Alias:
            return to  # the common case first, by exact type
        if isinstance(to, PID | ProcessID | Alias):
            return to
        if isinstance(to, str):
            if not to:
                raise ErrIncorrect("empty process name")
            return ProcessID(to, self._name)
        raise ErrIncorrect(f"not a PID, ProcessID, Alias or name: {to!r}")

    def _is_local(self, to: RemoteTarget) -> bool:
        return to.node == self._name

    def _lookup(self, to: RemoteTarget) -> ProcessState:
        """The live local process ``to`` names; call with ``_lock`` held."""
        if not isinstance(to, PID | ProcessID | Alias):
            raise ErrIncorrect(f"not a PID, ProcessID or Alias: {to!r}")
        if to.node != self._name:
            raise ErrProcessUnknown(f"{to!r} is not on node {self._name}")
        if isinstance(to, PID):
            if to.creation != self._creation:
                raise ErrProcessIncarnation(f"{to!r} belongs to an earlier run of {self._name}")
            proc = self._procs.get(to.id)
            if proc is None:
                raise ErrProcessUnknown(f"no process {to!r}")
            return proc
        if isinstance(to, Alias):
            pid = self._aliases.get(to)
            if pid is None:
                raise ErrProcessUnknown(f"no process behind {to!r}")
        else:
            pid = self._names.get(to.name)
            if pid is None:
                raise ErrProcessUnknown(f"no process registered as {str(to.name)!r}")
        proc = self._procs.get(pid.id)
        if proc is None:
            raise ErrProcessUnknown(f"no process {pid!r}")
        return proc

    # -- spawning and names ------------------------------------------------

    def spawn(
        self, factory: ActorFactory, *args: Any, options: ProcessOptions | None = None
    ) -> PID:
        return self.spawn_from(self._pid, None, factory, args, options)

    def spawn_register(
        self,
        name: str,
        factory: ActorFactory,
        *args: Any,
        options: ProcessOptions | None = None,
    ) -> PID:
        return self.spawn_from(self._pid, name, factory, args, options)

    def spawn_from(
        self,
        parent: PID,
        name: str | None,
        factory: ActorFactory,
        args: tuple[Any, ...],
        options: ProcessOptions | None,
    ) -> PID:
        """Start a process on behalf of ``parent``; see ``gen.Node.spawn``."""
        options = options or ProcessOptions()
        if name is not None:
            self._check_name(name)
        with self._lock:
            if self._stopping:
                raise ErrNodeTerminated(f"node {self._name} is stopping")
            if name is not None and Atom(name) in self._names:
                raise ErrTaken(f"name {name!r} is taken")
            pid = PID(self._name, self._next_id, self._creation)
            self._next_id += 1
            state = ProcessState(pid)
            self._procs[pid.id] = state
            if name is not None:
                self._names[Atom(name)] = pid
                state.names.add(Atom(name))
        try:
            actor = factory()
            if not isinstance(actor, Actor):
                raise ErrIncorrect(f"the factory made {actor!r}, not an act.Actor")
            actor._bind(pid, self, parent, {**self._options.env, **options.env})
            state.attach(ProcessActor.start(self, state, actor, tuple(args)))
        except BaseException:
            self._forget(state)
            raise
        state.started.wait()
        if state.init_error is not None:
            raise state.init_error
        if options.link_parent and parent != self._pid:
            self.link_from(pid, parent)
        return pid

    def spawn_remote_from(
        self, parent: PID, node: str, name: str, args: tuple[Any, ...], options: ProcessOptions
    ) -> PID:
        """See ``act.Actor.spawn_remote``."""
        self._check_running()
        return self._backend.spawn(parent, node, name, args, options)

    def _forget(self, state: ProcessState) -> None:
        with self._lock:
            self._procs.pop(state.pid.id, None)
            for n in state.names:
                self._names.pop(Atom(n), None)
        state.done.set()

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ErrIncorrect(f"a process name must be a non-empty str, got {name!r}")

    def register_name(self, name: str, pid: PID) -> None:
        self._check_name(name)
        with self._lock:
            if not isinstance(pid, PID) or not self._is_local(pid):
                raise ErrNotAllowed(f"only a local process can be registered, not {pid!r}")
            state = self._lookup(pid)
            if Atom(name) in self._names:
                raise ErrTaken(f"name {name!r} is taken")
            self._names[Atom(name)] = pid
            state.names.add(Atom(name))

    def unregister_name(self, name: str) -> PID:
        with self._lock:
            pid = self._names.pop(Atom(name), None)
            if pid is None:
                raise ErrNameUnknown(f"no process registered as {name!r}")
            state = self._procs.get(pid.id)
            if state is not None:
                state.names.discard(Atom(name))
            return pid

    def where_is(self, name: str) -> PID | None:
        with self._lock:
            return self._names.get(Atom(name))

    def create_alias_for(self, pid: PID) -> Alias:
        """A new alias routing to local ``pid``."""
        alias = Alias(self._name, random_ref_id(), self._creation)
        with self._lock:
            state = self._lookup(pid)
            self._aliases[alias] = pid
            state.aliases.add(alias)
        return alias

    def delete_alias_for(self, pid: PID, alias: Alias) -> None:
        """Drop ``alias``; ``ErrIncorrect`` unless ``pid`` made it."""
        with self._lock:
            if self._aliases.get(alias) != pid:
                raise ErrIncorrect(f"{alias!r} is not an alias of {pid!r}")
            del self._aliases[alias]
            state = self._procs.get(pid.id)
            if state is not None:
                state.aliases.discard(alias)

    # -- messages and calls ------------------------------------------------

    def send(self, to: Target, message: Any) -> None:
        self.send_from(self._pid, to, message)

    def send_from(self, sender: PID, to: Target, message: Any) -> None:
        """See ``act.Actor.send``. A send to the core process is dropped."""
        self._check_running()
        target = self._norm(to)
        if target.node != self._name:
            self._backend.send(sender, target, message)
            return
        copied = codec.copy(message)
        if target == self._pid:
            return
        with self._lock:
            state = self._lookup(target)
        state.tell(Deliver(sender, copied))

    def call(self, to: Target, request: Any, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        return self.call_from(self._pid, to, request, timeout)

    def call_from(self, sender: PID, to: Target, request: Any, timeout: float | None) -> Any:
        """See ``act.Actor.call``."""
        self._check_running()
        target = self._norm(to)
        ref = self.make_ref()
        if target.node != self._name:
            slot = self._calls.register(ref, target.node)
            try:
                self._backend.call(sender, target, ref, request)
            except BaseException:
                self._calls.cancel(ref)
                raise
            return self._calls.wait(ref, slot, timeout)
        copied = codec.copy(request)
        slot = self._calls.register(ref)
        try:
            with self._lock:
                state = self._lookup(target)
                if state.pid == sender:
                    raise ErrNotAllowed(f"{sender!r} cannot call itself")
                self._inflight.setdefault(state.pid, {})[ref] = sender
        except BaseException:
            self._calls.cancel(ref)
            raise
        state.tell(Request(sender, ref, copied))
        return self._calls.wait(ref, slot, timeout)

    def finish_call(self, callee: PID, caller: PID, ref: Ref, value: Any) -> None:
        """``handle_call`` returned ``value``: answer the caller, if still expected."""
        with self._lock:
            pending = self._inflight.get(callee)
            if pending is None or pending.pop(ref, None) is None:
                return
            if not pending:
                del self._inflight[callee]
        self._answer(callee, caller, ref, value, None)

    def _answer(
        self, callee: PID, caller: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        if caller.node != self._name:
            try:
                self._backend.reply(callee, caller, ref, value, error)
            except ErgoError as exc:
                if error is None:
                    try:
                        self._backend.reply(callee, caller, ref, None, exc)
                    except ErgoError:
                        log.debug("reply %r to %r lost", ref, caller, exc_info=True)
            return
        if error is None:
            try:
                value = codec.copy(value)
            except ErgoError as exc:
                value, error = None, exc
        self._calls.resolve(ref, value, error)

    # -- exits, links and monitors ----------------------------------------

    def send_exit(self, to: Target, reason: Any) -> None:
        self.send_exit_from(self._pid, to, reason)

    def send_exit_from(self, sender: PID, to: Target, reason: Any) -> None:
        """See ``gen.Node.send_exit``."""
        target = self._norm(to)
        if not self._is_local(target):
            if not isinstance(target, PID):
                raise ErrIncorrect("an exit signal to another node needs a PID")
            self._backend.exit(sender, target, reason)
            return
        with self._lock:
            state = self._lookup(target)
        kill = reason == TERMINATE_REASON_KILL
        state.tell(ExitSignal(sender, MessageExitPID(sender, reason), reason, kill))

    def link_from(self, holder: PID, target: Target) -> None:
        """See ``act.Actor.link``."""
        key = self._norm(target)
        if self._is_local(key):
            try:
                with self._lock:
                    self._lookup(key)
                    self._links.add_link(holder, key)
            except (ErrProcessUnknown, ErrProcessIncarnation):
                self._fire_exit(holder, key, ErrProcessUnknown(f"no process {key!r}"))
            return
        if self._links.add_link(holder, key):
            try:
                self._backend.link(holder, key)
            except BaseException:
                self._links.remove_link(holder, key)
                raise

    def unlink_from(self, holder: PID, target: Target) -> None:
        """See ``act.Actor.unlink``."""
        key = self._norm(target)
        if self._links.remove_link(holder, key) and not self._is_local(key):
            self._backend_quiet(self._backend.unlink, holder, key)

    def monitor_from(self, holder: PID, target: Target) -> Ref:
        """See ``act.Actor.monitor``."""
        key = self._norm(target)
        ref = self.make_ref()
        if self._is_local(key):
            try:
                with self._lock:
                    self._lookup(key)
                    self._links.add_monitor(holder, key, ref)
            except (ErrProcessUnknown, ErrProcessIncarnation):
                self._fire_down(holder, key, ref, ErrProcessUnknown(f"no process {key!r}"))
            return ref
        self._links.add_monitor(holder, key, ref)
        try:
            self._backend.monitor(holder, key, ref)
        except BaseException:
            self._links.remove_monitor(holder, ref)
            raise
        return ref

    def demonitor_from(self, holder: PID, ref: Ref) -> bool:
        """See ``act.Actor.demonitor``."""
        key = self._links.remove_monitor(holder, ref)
        if key is None:
            return False
        if not isinstance(key, NodeKey) and not self._is_local(key):
            self._backend_quiet(self._backend.demonitor, holder, key, ref)
        return True

    def _node_key(self, name: str) -> NodeKey:
        if not isinstance(name, str) or name == self._name:
            raise ErrIncorrect(f"cannot link or monitor node {name!r}")
        return NodeKey(Atom(name))

    def link_node_from(self, holder: PID, name: str) -> None:
        """See ``act.Actor.link_node``."""
        key = self._node_key(name)
        if self._links.add_link(holder, key):
            try:
                self._backend.connect(key.name)
            except BaseException:
                self._links.remove_link(holder, key)
                raise

    def unlink_node_from(self, holder: PID, name: str) -> None:
        """See ``act.Actor.unlink_node``."""
        self._links.remove_link(holder, self._node_key(name))

    def monitor_node_from(self, holder: PID, name: str) -> Ref:
        """See ``act.Actor.monitor_node``."""
        key = self._node_key(name)
        ref = self.make_ref()
        self._links.add_monitor(holder, key, ref)
        try:
            self._backend.connect(key.name)
        except BaseException:
            self._links.remove_monitor(holder, ref)
            raise
        return ref

    def _backend_quiet(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except ErgoError:
            log.debug("%s%r failed", getattr(method, "__name__", method), args, exc_info=True)

    def _local_state(self, pid: PID) -> ProcessState | None:
        with self._lock:
            if pid.creation != self._creation or pid.node != self._name:
                return None
            return self._procs.get(pid.id)

    def _fire_exit(self, holder: PID, key: Key, reason: Any, ended: PID | None = None) -> None:
        if holder.node != self._name:
            if not isinstance(key, NodeKey):
                self._backend_quiet(self._backend.exit, key, holder, reason, ended)
            return
        state = self._local_state(holder)
        if state is not None:
            state.tell(ExitSignal(key, _exit_message(key, reason), reason))

    def _fire_down(
        self, holder: PID, key: Key, ref: Ref, reason: Any, ended: PID | None = None
    ) -> None:
        if holder.node != self._name:
            if not isinstance(key, NodeKey):
                self._backend_quiet(self._backend.down, key, holder, ref, reason, ended)
            return
        state = self._local_state(holder)
        if state is not None:
            state.tell(Down(key, _down_message(key, ref, reason)))

    def _fire_target(self, key: Key, reason: Any, ended: PID | None = None) -> None:
        linkers, monitors = self._links.take_target(key)
        for holder in linkers:
            self._fire_exit(holder, key, reason, ended)
        for ref, holder in monitors:
            self._fire_down(holder, key, ref, reason, ended)

    def process_ended(self, state: ProcessState, reason: Any) -> None:
        """Called on the ended process's thread after ``terminate``.

        Removes it from every table, fails calls still waiting on it, and
        tells its linkers and monitors (queued behind its earlier messages).
        """
        pid = state.pid
        with self._lock:
            self._procs.pop(pid.id, None)
            names = [n for n in state.names if self._names.get(Atom(n)) == pid]
            for n in names:
                del self._names[Atom(n)]
            aliases = [a for a in state.aliases if self._aliases.get(a) == pid]
            for a in aliases:
                del self._aliases[a]
            inflight = self._inflight.pop(pid, {})
        keys: list[Key] = [pid, *(ProcessID(n, self._name) for n in names), *aliases]
        for key in keys:
            self._fire_target(key, reason, ended=pid)
        held, held_mons = self._links.take_holder(pid)
        for key in held:
            if not isinstance(key, NodeKey) and not self._is_local(key):
                self._backend_quiet(self._backend.unlink, pid, key)
        for ref, key in held_mons:
            if not isinstance(key, NodeKey) and not self._is_local(key):
                self._backend_quiet(self._backend.demonitor, pid, key, ref)
        for ref, caller in inflight.items():
            error = ErrProcessTerminated(f"{pid!r} ended before answering: {reason!r}")
            self._answer(pid, caller, ref, None, error)
        state.done.set()

    # -- inbound from the network (gen.NodeRouter) ------------------------

    def route_spawn(
        self,
        parent: PID,
        register: str | None,
        factory: ActorFactory,
        args: tuple[Any, ...],
        options: ProcessOptions | None = None,
    ) -> PID:
        # The args were just decoded off the wire: nobody else holds them, no copy needed.
        return self.spawn_from(parent, register or None, factory, tuple(args), options)

    def route_send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        to = self._norm(to)
        with self._lock:
            state = self._lookup(to)
        state.tell(Deliver(from_pid, message))

    def route_sends(
        self, sends: Sequence[tuple[PID, RemoteTarget, Any]]
    ) -> list[tuple[int, ErgoError]]:
        """One table look-up per message under one lock; one mailbox put per recipient."""
        failed: list[tuple[int, ErgoError]] = []
        batches: dict[int, tuple[ProcessState, list[tuple[PID, RemoteTarget, Any]]]] = {}
        last_to: object = None
        envelopes: list[tuple[PID, RemoteTarget, Any]] = []
        with self._lock:
            for i, item in enumerate(sends):
                to = item[1]
                if to is not last_to:  # a burst is mostly one recipient (same decoded object)
                    try:
                        state = self._lookup(self._norm(to))
                    except ErgoError as exc:
                        failed.append((i, exc))
                        last_to = None
                        continue
                    last_to = to
                    entry = batches.get(id(state))
                    if entry is None:
                        envelopes = []
                        batches[id(state)] = (state, envelopes)
                    else:
                        envelopes = entry[1]
                envelopes.append(item)
        for state, envelopes in batches.values():
            state.tell(Sends(envelopes))
        return failed

    def route_call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        to = self._norm(to)
        try:
            with self._lock:
                state = self._lookup(to)
                self._inflight.setdefault(state.pid, {})[ref] = from_pid
        except (ErrProcessUnknown, ErrProcessIncarnation) as exc:
            self._answer(self._pid, from_pid, ref, None, exc)
            return
        state.tell(Request(from_pid, ref, request))

    def route_reply(self, from_pid: PID, ref: Ref, value: Any, error: BaseException | None) -> bool:
        node = from_pid.node
        fate = self._calls.resolve_remote(ref, node, value, error)
        if fate is Reply.TAKEN:
            return True
        if fate is Reply.MISDIRECTED and node not in self._misdirected_from:
            self._misdirected_from.add(node)  # logged once per node: it may keep trying
            log.warning(
                "%s: refused a reply from %r to %r: the call was not made to %s "
                "(forged, or a broken peer); further ones from %s are counted, not logged",
                self._name,
                from_pid,
                ref,
                node,
                node,
            )
        return False

    def route_link(self, from_pid: PID, target: RemoteTarget) -> None:
        target = self._norm(target)
        try:
            with self._lock:
                self._lookup(target)
                self._links.add_link(from_pid, target)
        except (ErrProcessUnknown, ErrProcessIncarnation):
            self._fire_exit(from_pid, target, ErrProcessUnknown(f"no process {target!r}"))

    def route_unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        self._links.remove_link(from_pid, target)

    def route_monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        target = self._norm(target)
        try:
            with self._lock:
                self._lookup(target)
                self._links.add_monitor(from_pid, target, ref)
        except (ErrProcessUnknown, ErrProcessIncarnation):
            self._fire_down(from_pid, target, ref, ErrProcessUnknown(f"no process {target!r}"))

    def route_demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        self._links.remove_monitor(from_pid, ref)

    def route_exit(self, from_target: RemoteTarget, to: PID, reason: Any) -> None:
        linked = self._links.remove_link(to, from_target)
        kill = not linked and reason == TERMINATE_REASON_KILL
        state = self._local_state(to)
        if state is not None:
            message = _exit_message(from_target, reason)
            state.tell(ExitSignal(from_target, message, reason, kill))

    def route_down(self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any) -> None:
        if self._links.take_monitor(from_target, ref) != to:
            return
        state = self._local_state(to)
        if state is not None:
            state.tell(Down(from_target, _down_message(from_target, ref, reason)))

    def route_node_down(self, name: str, reason: Any = None) -> None:
        node = Atom(name)
        if reason is None:
            reason = ErrNoConnection(f"connection to {node} lost")
        for key in self._links.keys_on_node(node):
            self._fire_target(key, reason)
        for holder in self._links.holders_on_node(node):
            self._links.take_holder(holder)
        self._calls.fail_node(
            node,
            ErrNoConnection(
                f"connection to {node} lost before the reply arrived "
                "(the request may have been processed there)"
            ),
        )
        with self._lock:
            for callee, pending in list(self._inflight.items()):
                for ref in [r for r, caller in pending.items() if caller.node == node]:
                    del pending[ref]
                if not pending:
                    del self._inflight[callee]

    # -- lifetime ----------------------------------------------------------

    def stop(self) -> None:
        with self._lock:
            first = not self._stopping
            self._stopping = True
            procs = list(self._procs.values())
        if not first:
            self._stopped.wait(self._options.shutdown_timeout + 1.0)
            return
        deadline = time.monotonic() + max(self._options.shutdown_timeout, 0.0)
        for state in procs:
            state.tell(Stop(TERMINATE_REASON_SHUTDOWN))
        self._calls.fail_all(ErrNodeTerminated(f"node {self._name} is stopping"))
        me = threading.current_thread()
        stuck = []
        for state in procs:
            thread = state.thread
            if thread is me:
                continue  # stop() called by a process: it ends after its callback returns
            state.done.wait(max(deadline - time.monotonic(), 0.0))
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0.0))
                if thread.is_alive():
                    stuck.append(state.pid)
        if stuck:
            log.warning("%s: %d processes did not stop in time: %r", self._name, len(stuck), stuck)
        try:
            self._backend.stop()
        except Exception:
            log.exception("%s: network backend failed to stop", self._name)
        with _live_lock:
            _live_names.discard(self._name)
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)
