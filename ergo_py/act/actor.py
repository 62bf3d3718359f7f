"""``act.Actor``: the behaviour a user subclasses; the node runs it in its own thread.

Callbacks (``init``, ``handle_message``, ``handle_call``, ``terminate``) run one
at a time on the process's thread, so an actor needs no locks for its own
state. An exception escaping a callback ends the process with that exception
as the reason; the node keeps running.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ergo_py.gen.errors import ErrNotAllowed
from ergo_py.gen.identifiers import PID, Alias, Ref
from ergo_py.gen.messages import TERMINATE_REASON_NORMAL
from ergo_py.gen.node import Node, Spawning, SpawnSpec, Target
from ergo_py.gen.options import DEFAULT_REQUEST_TIMEOUT, ProcessOptions

log = logging.getLogger(__name__)


class ProcessHost(Protocol):
    """What the node offers a process (implemented by ``ergo_py.node``)."""

    def send_from(self, sender: PID, to: Target, message: Any) -> None: ...
    def call_from(self, sender: PID, to: Target, request: Any, timeout: float | None) -> Any: ...
    def send_exit_from(self, sender: PID, to: Target, reason: Any) -> None: ...
    def link_from(self, holder: PID, target: Target) -> None: ...
    def unlink_from(self, holder: PID, target: Target) -> None: ...
    def monitor_from(self, holder: PID, target: Target) -> Ref: ...
    def demonitor_from(self, holder: PID, ref: Ref) -> bool: ...
    def link_node_from(self, holder: PID, name: str) -> None: ...
    def unlink_node_from(self, holder: PID, name: str) -> None: ...
    def monitor_node_from(self, holder: PID, name: str) -> Ref: ...
    def spawn_from(self, parent: PID, spec: SpawnSpec) -> PID: ...
    def spawn_remote_from(
        self, parent: PID, node: str, name: str, args: tuple[Any, ...], options: ProcessOptions
    ) -> PID: ...
    def register_name(self, name: str, pid: PID) -> None: ...
    def unregister_name(self, name: str) -> PID: ...
    def create_alias_for(self, pid: PID) -> Alias: ...
    def delete_alias_for(self, pid: PID, alias: Alias) -> None: ...
    def node_of(self) -> Node: ...


_NO_STOP = object()


class Actor(Spawning):
    """Subclass and override the callbacks you need.

    ``trap_exit``: when True, an exit signal (a linked process ended, or
    ``send_exit``) arrives as a ``gen.MessageExit*`` message through
    ``handle_message`` instead of ending this process. ``"kill"`` is never
    trapped.
    """

    trap_exit: bool = False

    _pid: PID
    _host: ProcessHost
    _parent: PID
    _env: dict[str, Any]
    _stop_reason: Any = _NO_STOP

    def _bind(self, pid: PID, host: ProcessHost, parent: PID, env: dict[str, Any]) -> None:
        """Called by the node once, before ``init``: who this process is and where it runs."""
        self._pid = pid
        self._host = host
        self._parent = parent
        self._env = env

    # -- callbacks ---------------------------------------------------------

    def init(self, *args: Any) -> None:
        """Runs first, on the process's thread, with ``spawn``'s arguments.

        Raising here fails the spawn: ``spawn`` re-raises the exception.
        """

    def handle_message(self, sender: PID, message: Any) -> None:
        """A message sent with ``send`` (or a system message). Default: logged and dropped."""
        log.warning("%r: unhandled message from %r: %r", self._pid, sender, message)

    def handle_call(self, sender: PID, ref: Ref, request: Any) -> Any:
        """A request from ``call``; the return value is the reply.

        An exception raised here ends this process, and the caller's ``call``
        fails at once with ``gen.ErrProcessTerminated``.
        """
        log.warning("%r: unhandled call from %r: %r", self._pid, sender, request)
        return None

    def terminate(self, reason: Any) -> None:
        """Runs last, on the process's thread; ``reason`` says why the process ends."""

    # -- identity ----------------------------------------------------------

    @property
    def pid(self) -> PID:
        """This process's PID."""
        return self._pid

    @property
    def node(self) -> Node:
        """The node this process runs on."""
        return self._host.node_of()

    @property
    def parent(self) -> PID:
        """The process (or node core) that spawned this one."""
        return self._parent

    @property
    def env(self) -> dict[str, Any]:
        """The node's env overlaid with ``ProcessOptions.env`` (this process's own copy)."""
        return self._env

    # -- messaging ---------------------------------------------------------

    def send(self, to: Target, message: Any) -> None:
        """Queue a copy of ``message`` for ``to``.

        Messages from one process to another arrive in the order sent.
        Raises ``gen.ErrUnsupportedType`` for values that cannot cross the
        wire, ``gen.ErrProcessUnknown`` for a missing local target,
        ``gen.ErrNoConnection`` when the target's node cannot be reached.
        """
        self._host.send_from(self._pid, to, message)

    def call(self, to: Target, request: Any, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Ask ``to`` and wait for its ``handle_call`` result.

        Raises ``gen.ErrTimeout`` (a late reply is then discarded),
        ``gen.ErrProcessUnknown`` at once for a missing target,
        ``gen.ErrProcessTerminated`` at once when the target ends first,
        ``gen.ErrNoConnection`` for an unreachable or lost node.
        """
        return self._host.call_from(self._pid, to, request, timeout)

    def send_exit(self, to: Target, reason: Any) -> None:
        """Send an exit signal: ``to`` ends with ``reason`` unless it traps exits."""
        self._host.send_exit_from(self._pid, to, reason)

    # -- links and monitors -----------------------------------------------

    def link(self, target: Target) -> None:
        """When ``target`` ends, this process gets an exit (and ends, unless trapping).

        One-way, as in Ergo. A missing target delivers the exit at once with
        reason ``gen.ErrProcessUnknown``.
        """
        self._host.link_from(self._pid, target)

    def unlink(self, target: Target) -> None:
        """Undo ``link(target)``; unknown links are ignored."""
        self._host.unlink_from(self._pid, target)

    def monitor(self, target: Target) -> Ref:
        """When ``target`` ends, this process gets a ``gen.MessageDown*`` with the returned ref.

        A missing target delivers the down at once with reason ``gen.ErrProcessUnknown``.
        """
        return self._host.monitor_from(self._pid, target)

    def demonitor(self, ref: Ref) -> bool:
        """Drop monitor ``ref``; False if it had already fired or never existed."""
        return self._host.demonitor_from(self._pid, ref)

    def link_node(self, name: str) -> None:
        """Get ``gen.MessageExitNode`` when the connection to node ``name`` ends."""
        self._host.link_node_from(self._pid, name)

    def unlink_node(self, name: str) -> None:
        """Undo ``link_node``."""
        self._host.unlink_node_from(self._pid, name)

    def monitor_node(self, name: str) -> Ref:
        """Get ``gen.MessageDownNode`` when the connection to node ``name`` ends."""
        return self._host.monitor_node_from(self._pid, name)

    # -- processes, names, aliases ----------------------------------------

    def _spawn(self, spec: SpawnSpec) -> PID:
        """``spawn`` / ``spawn_register`` (``gen.Spawning``): a child of this process."""
        return self._host.spawn_from(self._pid, spec)

    def spawn_remote(
        self, node: str, name: str, *args: Any, options: ProcessOptions | None = None
    ) -> PID:
        """Start the factory ``name`` enabled for remote spawn on ``node``, as this one's child.

        ``options.link_parent`` links it to this process across the network;
        ``options.env`` travels with the request.
        """
        return self._host.spawn_remote_from(
            self._pid, node, name, args, options or ProcessOptions()
        )

    def register_name(self, name: str) -> None:
        """Register this process under ``name`` (``gen.ErrTaken`` if used)."""
        self._host.register_name(name, self._pid)

    def unregister_name(self, name: str) -> None:
        """Drop ``name``, which must be this process's."""
        pid = self._host.node_of().where_is(name)
        if pid != self._pid:
            raise ErrNotAllowed(f"{name!r} is not registered by {self._pid!r}")
        self._host.unregister_name(name)

    def create_alias(self) -> Alias:
        """A new address that routes to this process until ``delete_alias``."""
        return self._host.create_alias_for(self._pid)

    def delete_alias(self, alias: Alias) -> None:
        """Stop routing ``alias`` here (``gen.ErrIncorrect`` if it is not ours)."""
        self._host.delete_alias_for(self._pid, alias)

    def stop(self, reason: Any = TERMINATE_REASON_NORMAL) -> None:
        """End this process once the current callback returns."""
        self._stop_reason = reason
