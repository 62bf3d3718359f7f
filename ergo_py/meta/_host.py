"""How a meta-process runs: one actor for its messages, one shared loop for its I/O.

Each meta-process is an ordinary process of its node (``_MetaActor``): its
``init`` starts the resource, messages sent to its aliases reach its
``handle_message`` on its own thread, and ``terminate`` closes the resource,
whether it ends through ``node.send_exit_meta``, ``node.stop`` or a crash.

Socket I/O runs on one asyncio loop thread per node that is shared by all of
that node's meta-processes (``_MetaLoops``): started with the first, stopped
when the last ends. It is not the node's network loop, for two reasons:
a meta-process hands what it reads to processes with ``send``, and a send to a
process on another node may wait for a connection to be made, which on the
network loop would wait on itself; and a busy web server must not add latency
to the node's own traffic. It also works with the network disabled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Coroutine
from typing import Any

from ergo_py.act.actor import Actor
from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import ErrIncorrect, NodeError
from ergo_py.gen.identifiers import Alias
from ergo_py.gen.meta import MetaBehavior, MetaHost
from ergo_py.net.loop import LoopThread

log = logging.getLogger(__name__)


class _MetaLoops:
    """The meta loop of each node, counted by the meta-processes using it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[int, tuple[LoopThread, int]] = {}

    def acquire(self, key: object, name: str) -> LoopThread:
        with self._lock:
            entry = self._loops.get(id(key))
            lt, count = entry if entry is not None else (LoopThread(f"{name}/meta"), 0)
            self._loops[id(key)] = (lt, count + 1)
            return lt

    def release(self, key: object) -> None:
        with self._lock:
            lt, count = self._loops[id(key)]
            if count > 1:
                self._loops[id(key)] = (lt, count - 1)
                return
            del self._loops[id(key)]
        lt.stop()


_loops = _MetaLoops()


class MetaProcess(MetaBehavior):
    """Base of the meta behaviours: the life of one resource, driven by its actor.

    Subclasses implement ``_start`` (on the actor's thread; returns once
    serving), ``_message`` (a message to one of its aliases) and ``_stop``
    (close everything; on the actor's thread). ``self.loop`` is the loop the
    resource's I/O runs on; ``self.proc`` the actor (``send``,
    ``create_alias``, ...).
    """

    def __init__(self) -> None:
        self._spawned = False
        self._alias: Alias | None = None
        self.proc: _MetaActor
        self.loop: LoopThread
        self.host: MetaHost

    def meta_actor(self, host: MetaHost) -> Actor:
        if self._spawned:
            raise ErrIncorrect(f"{type(self).__name__} runs once; make a new one")
        self._spawned = True
        self.host = host
        return _MetaActor(self)

    def meta_alias(self) -> Alias:
        if self._alias is None:
            raise ErrIncorrect(f"{type(self).__name__} has not started")
        return self._alias

    @property
    def alias(self) -> Alias | None:
        """The meta-process's alias once started."""
        return self._alias

    def _cert_manager(self, given: CertManager | None) -> CertManager | None:
        return given if given is not None else self.proc.node.cert_manager()

    def _required_cert_manager(self, given: CertManager | None) -> CertManager:
        """The cert manager for a TLS resource: its own, else the node's."""
        cm = self._cert_manager(given)
        if cm is None:
            raise NodeError(
                f"{type(self).__name__} asks for TLS but neither it nor the node has a cert manager"
            )
        return cm

    def _run_or_stop(self, setup: Coroutine[Any, Any, None], timeout: float) -> None:
        """Run ``setup`` on the resource's loop; if it fails, close what it opened."""
        try:
            self.loop.run(setup, timeout=timeout)
        except BaseException:
            self._stop(None)
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def _message(self, sender: Any, message: Any) -> None:
        log.debug("%s: %r from %r ignored", type(self).__name__, message, sender)

    def _stop(self, reason: Any) -> None:
        raise NotImplementedError


class _MetaActor(Actor):
    """The process behind one meta-process."""

    def __init__(self, behavior: MetaProcess) -> None:
        super().__init__()
        self._behavior = behavior
        self._lease: object | None = None

    def init(self, *args: Any) -> None:
        b = self._behavior
        b.proc = self
        key = self.node
        b.loop = _loops.acquire(key, str(self.node.name))
        self._lease = key
        try:
            b._alias = self.create_alias()
            b._start()
        except BaseException:
            self._release()
            raise

    def handle_message(self, sender: Any, message: Any) -> None:
        self._behavior._message(sender, message)

    def terminate(self, reason: Any) -> None:
        try:
            self._behavior._stop(reason)
        finally:
            self._release()

    def _release(self) -> None:
        key, self._lease = self._lease, None
        if key is not None:
            _loops.release(key)
