"""The node's runtime: its processes, and what they ask of it.

A node has three faces, each its own object:

- ``LocalNode`` (``node/local.py``): the ``gen.Node`` that ``start_node`` returns;
- ``Core`` (here): what processes call, as their ``act.ProcessHost``
  (``send_from``, ``call_from``, ``link_from``, ...) and their
  ``ProcessOwner`` (``finish_call``, ``process_ended``); it owns the rest;
- ``Router`` (``node/router.py``): the ``gen.NodeRouter`` the network backend calls.

They share the ``ProcessTable`` (``node/table.py``, which also says how its
lock is used), the ``LinkTable`` and the ``CallTable``; ``Signals``
(``node/signals.py``) delivers exits and downs. Every operation on another
node goes through the ``gen.NetworkBackend`` made at start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ergo_py.act.actor import Actor
from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNameUnknown,
    ErrNodeTerminated,
    ErrNotAllowed,
    ErrProcessTerminated,
    ErrProcessUnknown,
    ErrTaken,
    NodeError,
)
from ergo_py.gen.events import Health
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref, random_ref_id
from ergo_py.gen.identifiers import make_ref as _ref
from ergo_py.gen.messages import (
    TERMINATE_REASON_KILL,
    TERMINATE_REASON_NORMAL,
    TERMINATE_REASON_SHUTDOWN,
    MessageExitPID,
)
from ergo_py.gen.meta import AppServerFactory, MetaBehavior
from ergo_py.gen.node import (
    Network,
    NetworkBackend,
    Node,
    NodeRouter,
    RemoteSpawnRequest,
    RemoteTarget,
    SpawnSpec,
    Target,
)
from ergo_py.gen.options import NetworkMode, NodeOptions, ProcessOptions
from ergo_py.net import codec
from ergo_py.node import web_services
from ergo_py.node.calls import CallTable
from ergo_py.node.links import Key, LinkTable, NodeKey
from ergo_py.node.observe import Observer
from ergo_py.node.process import (
    Deliver,
    ExitSignal,
    ProcessActor,
    ProcessState,
    Request,
    Stop,
)
from ergo_py.node.router import Router
from ergo_py.node.signals import Signals, quiet
from ergo_py.node.table import ProcessTable, TableShortcuts

RECENT_EVENTS = 50  # node events kept for the observer page and inspect

log = logging.getLogger(__name__)

CORE_PROCESS_ID = 1
FIRST_PROCESS_ID = 1000

BackendFactory = Callable[[NodeRouter, NodeOptions], NetworkBackend]

_live_lock = threading.Lock()
_live_names: set[Atom] = set()


def _mailbox_size(state: ProcessState) -> int:
    ref = state.actor_ref
    inbox: Any = ref.actor_inbox if ref is not None else None  # our SimpleQueue
    return int(inbox.qsize()) if inbox is not None else 0


class _Undo:
    """``with _Undo(undo, *args):`` calls ``undo(*args)`` if the block raises, and re-raises.

    For what a failed step must not leave behind (a registered call, a
    link, a monitor, a half-made process), whatever the exception.
    """

    __slots__ = ("_args", "_undo")

    def __init__(self, undo: Callable[..., object], *args: Any) -> None:
        self._undo = undo
        self._args = args

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self._undo(*self._args)


class Core(TableShortcuts):
    """A running node's runtime (see the module docstring); one per node."""

    def __init__(
        self,
        node: Node,
        name: Atom,
        creation: int,
        options: NodeOptions,
        backend_factory: BackendFactory,
    ) -> None:
        with _live_lock:
            if name in _live_names:
                raise NodeError(f"a node named {name!r} is already running in this process")
            _live_names.add(name)
        self._node = node
        self._options = options
        self._pid = PID(name, CORE_PROCESS_ID, creation)
        table = ProcessTable(name, creation)
        self._use_table(table)  # _name, _creation, _lock, _procs, ... (node/table.py)
        self._next_id = FIRST_PROCESS_ID
        self._links = LinkTable()
        self._calls = CallTable()
        self._signals = Signals(table, self._links)
        self.router = Router(self, table, self._links, self._calls, self._signals)
        self._metas: dict[Alias, PID] = {}  # meta-processes by alias, under the table lock
        self._stopping = False
        self._stopped = threading.Event()
        self._ended = False  # _stopped.is_set(), as a plain attribute for the per-message paths
        self.observer = Observer(name, self._deliver_event, options)
        self.router.observer = self.observer  # the network backend reports to it
        # The last node events for the observer page and ``ergo-py inspect``
        # (they are rare: certificate changes, connections up and down).
        self.observer.keep_recent(
            options.observer.events if options.observer is not None else RECENT_EVENTS
        )
        self.metrics_port: int | None = None
        self.observer_port: int | None = None
        try:
            self._backend = backend_factory(self.router, options)
        except BaseException:
            self.observer.close()
            with _live_lock:
                _live_names.discard(name)
            raise
        self._signals.backend = self._backend

    # -- observability (node/observe.py, node/metrics.py) ------------------

    def _deliver_event(self, pid: PID, event: Any) -> bool:
        """Queue a node event for a subscriber (never blocks); False if it is gone."""
        with self._lock:
            state = self._procs.get(pid.id) if pid.creation == self._creation else None
        return state is not None and state.tell(Deliver(self._pid, event))

    def subscribe(self, pid: PID, types: tuple[type, ...]) -> None:
        """See ``gen.Node.subscribe``."""
        if not isinstance(pid, PID) or not self._is_local(pid):
            raise ErrNotAllowed(f"only a local process can subscribe to events, not {pid!r}")
        with self._lock:
            self._lookup(pid)  # ErrProcessUnknown if it is not (or no longer) there
        self.observer.subscribe(pid, types)

    def unsubscribe(self, pid: PID) -> None:
        self.observer.unsubscribe(pid)

    def health(self) -> Health:
        """See ``gen.Node.health``."""
        needs_acceptor = self._options.network.mode == NetworkMode.ENABLED
        return self.observer.health(self.is_alive(), needs_acceptor)

    def start_web_services(self, app_server: AppServerFactory | None) -> None:
        """Serve ``options.metrics`` and ``options.observer`` if asked (``web_services.py``)."""
        opts = self._options
        self.metrics_port = web_services.serve_metrics(self, opts, self._calls.__len__, app_server)
        self.observer_port = web_services.serve_observer(self, opts, app_server)

    def processes_info(self, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` processes: pid, names and mailbox size (the observer page)."""
        with self._lock:
            states = sorted(self._procs.items())[:limit]
        return [
            {"pid": str(s.pid), "names": sorted(map(str, s.names)), "mailbox": _mailbox_size(s)}
            for _, s in states
        ]

    # -- identity ----------------------------------------------------------

    @property
    def pid(self) -> PID:
        """The node's core process: the sender of what the node itself sends."""
        return self._pid

    def node_of(self) -> Node:
        """The ``gen.Node`` users hold (``act.Actor.node``)."""
        return self._node

    def make_ref(self) -> Ref:
        """A fresh reference of this node (96 random bits: unique, and unguessable)."""
        return _ref(self._name, random_ref_id(), self._creation)

    def _check_running(self) -> None:
        if self._ended:
            raise ErrNodeTerminated(f"node {self._name} has stopped")

    def is_alive(self) -> bool:
        return not self._stopping

    def network(self) -> Network:
        return self._backend.network()

    def __repr__(self) -> str:
        return f"<Core of {self._name} creation={self._creation}>"

    # -- spawning and names ------------------------------------------------

    def spawn_from(self, parent: PID, spec: SpawnSpec) -> PID:
        """Start a process on behalf of ``parent``; see ``gen.Node.spawn``."""
        name, factory, args, options = spec.name, spec.factory, spec.args, spec.options
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
        with _Undo(self._forget, state):
            actor = factory()
            if not isinstance(actor, Actor):
                raise ErrIncorrect(f"the factory made {actor!r}, not an act.Actor")
            actor._bind(pid, self, parent, {**self._options.env, **options.env})
            state.attach(ProcessActor.start(self, state, actor, tuple(args)))
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
        return self._backend.spawn(parent, RemoteSpawnRequest(node, name, args, options))

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

    # -- meta-processes (see gen.MetaBehavior) ------------------------------

    def cert_manager(self) -> CertManager | None:
        return self._options.cert_manager

    def spawn_meta(self, behavior: MetaBehavior) -> Alias:
        """See ``gen.Node.spawn_meta``: a process of the node's own, known by its alias."""
        if not isinstance(behavior, MetaBehavior):
            raise ErrIncorrect(f"spawn_meta needs a gen.MetaBehavior, got {behavior!r}")
        pid = self.spawn_from(self._pid, SpawnSpec(lambda: behavior.meta_actor(self)))
        alias = behavior.meta_alias()
        with self._lock:
            if self._aliases.get(alias) != pid:  # it has already ended
                raise ErrProcessTerminated(f"meta-process {pid!r} ended as it started")
            self._metas[alias] = pid
        return alias

    def queued(self, to: Any) -> int:
        """See ``gen.MetaHost.queued``."""
        try:
            target = self._norm(to)
            with self._lock:
                state = self._lookup(target)
        except ErgoError:
            return 0
        return _mailbox_size(state)

    def send_exit_meta(self, alias: Alias, reason: Any) -> None:
        """See ``gen.Node.send_exit_meta``."""
        with self._lock:
            pid = self._metas.get(alias)
            state = self._procs.get(pid.id) if pid is not None else None
        if pid is None:
            raise ErrProcessUnknown(f"no meta-process {alias!r}")
        if state is None:
            return
        state.tell(Stop(TERMINATE_REASON_NORMAL if reason is None else reason))
        if state.thread is not threading.current_thread():
            state.done.wait(max(self._options.shutdown_timeout, 0.0))

    # -- messages and calls ------------------------------------------------

    def send_from(self, sender: PID, to: Target, message: Any) -> None:
        """See ``act.Actor.send``. A send to the core process is dropped."""
        if self._ended:
            self._check_running()
        t = type(to)  # norm(), inline for the identifiers themselves: this runs per message
        target: RemoteTarget = (
            to if t is PID or t is ProcessID or t is Alias else self._norm(to)  # type: ignore[assignment]
        )
        if target.node != self._name:
            self._backend.send(sender, target, message)
            return
        copied = codec.copy(message)
        if target == self._pid:
            return
        with self._lock:
            state = self._lookup(target)
        state.tell(Deliver(sender, copied))

    def call_from(self, sender: PID, to: Target, request: Any, timeout: float | None) -> Any:
        """See ``act.Actor.call``."""
        self._check_running()
        target = self._norm(to)
        ref = self.make_ref()
        if target.node != self._name:
            slot = self._calls.register(ref, target.node)
            with _Undo(self._calls.cancel, ref):
                self._backend.call(sender, target, ref, request)
            return self._calls.wait(ref, slot, timeout)
        copied = codec.copy(request)
        slot = self._calls.register(ref)
        with _Undo(self._calls.cancel, ref), self._lock:
            state = self._lookup(target)
            if state.pid == sender:
                raise ErrNotAllowed(f"{sender!r} cannot call itself")
            self._inflight.setdefault(state.pid, {})[ref] = sender
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
        self.answer(callee, caller, ref, value, None)

    def answer(
        self, callee: PID, caller: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        """Answer ``caller``'s call ``ref`` to ``callee``: over the network or in the call table."""
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
            self._signals.link_local(holder, key)
            return
        if self._links.add_link(holder, key):
            with _Undo(self._links.remove_link, holder, key):
                self._backend.link(holder, key)

    def unlink_from(self, holder: PID, target: Target) -> None:
        """See ``act.Actor.unlink``."""
        key = self._norm(target)
        if self._links.remove_link(holder, key) and not self._is_local(key):
            quiet(self._backend.unlink, holder, key)

    def monitor_from(self, holder: PID, target: Target) -> Ref:
        """See ``act.Actor.monitor``."""
        key = self._norm(target)
        ref = self.make_ref()
        if self._is_local(key):
            self._signals.monitor_local(holder, key, ref)
            return ref
        self._links.add_monitor(holder, key, ref)
        with _Undo(self._links.remove_monitor, holder, ref):
            self._backend.monitor(holder, key, ref)
        return ref

    def demonitor_from(self, holder: PID, ref: Ref) -> bool:
        """See ``act.Actor.demonitor``."""
        key = self._links.remove_monitor(holder, ref)
        if key is None:
            return False
        if not isinstance(key, NodeKey) and not self._is_local(key):
            quiet(self._backend.demonitor, holder, key, ref)
        return True

    def _node_key(self, name: str) -> NodeKey:
        if not isinstance(name, str) or name == self._name:
            raise ErrIncorrect(f"cannot link or monitor node {name!r}")
        return NodeKey(Atom(name))

    def link_node_from(self, holder: PID, name: str) -> None:
        """See ``act.Actor.link_node``."""
        key = self._node_key(name)
        if self._links.add_link(holder, key):
            with _Undo(self._links.remove_link, holder, key):
                self._backend.connect(key.name)

    def unlink_node_from(self, holder: PID, name: str) -> None:
        """See ``act.Actor.unlink_node``."""
        self._links.remove_link(holder, self._node_key(name))

    def monitor_node_from(self, holder: PID, name: str) -> Ref:
        """See ``act.Actor.monitor_node``."""
        key = self._node_key(name)
        ref = self.make_ref()
        self._links.add_monitor(holder, key, ref)
        with _Undo(self._links.remove_monitor, holder, ref):
            self._backend.connect(key.name)
        return ref

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
                self._metas.pop(a, None)
            inflight = self._inflight.pop(pid, {})
        keys: list[Key] = [pid, *(ProcessID(n, self._name) for n in names), *aliases]
        self._signals.process_ended(pid, keys, reason)
        self.observer.unsubscribe(pid)
        for ref, caller in inflight.items():
            error = ErrProcessTerminated(f"{pid!r} ended before answering: {reason!r}")
            self.answer(pid, caller, ref, None, error)
        state.done.set()

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
        self.observer.close()
        with _live_lock:
            _live_names.discard(self._name)
        self._ended = True
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)
