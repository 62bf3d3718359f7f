"""The node's process table: processes, registered names, aliases, calls in flight.

One table per node, shared by the core (what processes and the user ask) and
the router (what the network delivers); both read and write its dicts
directly, under ``lock``.

Locking: ``lock`` guards every dict here. A process leaves the table under it
before its links and in-flight calls are collected, and links/calls on a
local target are recorded under it after checking the target is alive, so
none is ever missed. Nothing calls out (to a process mailbox or to the
backend) while holding it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ergo_py.gen.errors import ErrIncorrect, ErrProcessIncarnation, ErrProcessUnknown
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.gen.node import RemoteTarget, Target
from ergo_py.node.process import ProcessState


class ProcessTable:
    """The live local processes and everything that names them."""

    __slots__ = ("aliases", "creation", "inflight", "lock", "name", "names", "procs")

    def __init__(self, name: Atom, creation: int) -> None:
        self.name = name
        self.creation = creation
        self.lock = threading.RLock()
        self.procs: dict[int, ProcessState] = {}  # by PID id
        self.names: dict[Atom, PID] = {}
        self.aliases: dict[Alias, PID] = {}
        # Calls a local process was asked and has not answered: callee -> ref -> caller.
        self.inflight: dict[PID, dict[Ref, PID]] = {}

    def norm(self, to: Target) -> RemoteTarget:
        """``to`` as an identifier: a bare name is a ``ProcessID`` on this node."""
        if type(to) is PID or type(to) is ProcessID or type(to) is Alias:
            return to  # the common case first, by exact type
        if isinstance(to, PID | ProcessID | Alias):
            return to
        if isinstance(to, str):
            if not to:
                raise ErrIncorrect("empty process name")
            return ProcessID(to, self.name)
        raise ErrIncorrect(f"not a PID, ProcessID, Alias or name: {to!r}")

    def is_local(self, to: RemoteTarget) -> bool:
        return to.node == self.name

    def lookup(self, to: RemoteTarget) -> ProcessState:
        """The live local process ``to`` names; call with ``lock`` held."""
        if not isinstance(to, PID | ProcessID | Alias):
            raise ErrIncorrect(f"not a PID, ProcessID or Alias: {to!r}")
        if to.node != self.name:
            raise ErrProcessUnknown(f"{to!r} is not on node {self.name}")
        if isinstance(to, PID):
            if to.creation != self.creation:
                raise ErrProcessIncarnation(f"{to!r} belongs to an earlier run of {self.name}")
            proc = self.procs.get(to.id)
            if proc is None:
                raise ErrProcessUnknown(f"no process {to!r}")
            return proc
        if isinstance(to, Alias):
            pid = self.aliases.get(to)
            if pid is None:
                raise ErrProcessUnknown(f"no process behind {to!r}")
        else:
            pid = self.names.get(to.name)
            if pid is None:
                raise ErrProcessUnknown(f"no process registered as {str(to.name)!r}")
        proc = self.procs.get(pid.id)
        if proc is None:
            raise ErrProcessUnknown(f"no process {pid!r}")
        return proc

    def local_state(self, pid: PID) -> ProcessState | None:
        """The live process ``pid``, if it is one of this node's (takes ``lock``)."""
        with self.lock:
            if pid.creation != self.creation or pid.node != self.name:
                return None
            return self.procs.get(pid.id)


class TableShortcuts:
    """The table's name, lock, dicts and look-ups as attributes of the object using them.

    The core and the router read them per message (``send_from``, ``call_from``,
    ``route_sends``, ``route_call``): one attribute away instead of two. Both
    call :meth:`_use_table` once, in their constructor.
    """

    _name: Atom
    _creation: int
    _lock: threading.RLock
    _procs: dict[int, ProcessState]
    _names: dict[Atom, PID]
    _aliases: dict[Alias, PID]
    _inflight: dict[PID, dict[Ref, PID]]
    _norm: Callable[[Target], RemoteTarget]
    _lookup: Callable[[RemoteTarget], ProcessState]
    _is_local: Callable[[RemoteTarget], bool]
    _local_state: Callable[[PID], ProcessState | None]

    def _use_table(self, table: ProcessTable) -> None:
        self._name = table.name
        self._creation = table.creation
        self._lock = table.lock
        self._procs = table.procs
        self._names = table.names
        self._aliases = table.aliases
        self._inflight = table.inflight
        self._norm = table.norm
        self._lookup = table.lookup
        self._is_local = table.is_local
        self._local_state = table.local_state
