"""What both certificate-file feeders share: checks, one thread, ``on_reload``, ``with``.

``lib.reload.CertReloader`` (file-system events, the whole set applied as one
change) and the older ``lib.certfiles.CertFileWatcher`` (stat polling, each
group of files on its own) differ in *when* they read and *what* they apply
together; the rest (which managers they accept, the one thread a feeder owns
from ``start`` to ``stop``, the callback after a reload) is this class.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Self

from ergo_py.gen.certmanager import CertAuthManager, CertManager, CertState
from ergo_py.gen.errors import ErrIncorrect

__all__ = ["FileFeed"]

log = logging.getLogger(__name__)


class FileFeed(AbstractContextManager["FileFeed"]):
    """Base of a feeder: subclasses set ``_manager`` in ``__init__`` and write ``_run``.

    ``start`` runs ``_run`` on one daemon thread; ``stop`` sets ``_stop``
    (which ``_run`` must watch), calls ``_stopping`` and joins the thread.
    """

    _manager: CertManager

    def __init__(
        self,
        manager: CertManager | None,
        has_cas: bool,
        on_reload: Callable[[CertState], None] | None,
    ) -> None:
        if manager is not None and not isinstance(manager, CertManager):
            raise ErrIncorrect(f"manager must be a gen.CertManager, not {type(manager).__name__}")
        if has_cas and manager is not None and not isinstance(manager, CertAuthManager):
            raise ErrIncorrect("CA files need a gen.CertAuthManager")
        self._on_reload = on_reload
        self._lock = threading.Lock()  # one reload at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.reloads = 0

    @property
    def manager(self) -> CertManager:
        """The manager this feeder feeds."""
        return self._manager

    @property
    def running(self) -> bool:
        """True while the feeder's thread runs."""
        t = self._thread
        return t is not None and t.is_alive()

    def _run(self) -> None:
        raise NotImplementedError

    def _thread_name(self) -> str:
        return f"ergo-py {type(self).__name__}"

    def _stopping(self) -> None:
        """Called by :meth:`stop` after the stop flag is set, before the join."""

    def _notify(self, state: CertState) -> None:
        """``on_reload(state)``, on the calling thread; what it raises is logged, not raised."""
        if self._on_reload is None:
            return
        try:
            self._on_reload(state)
        except Exception:
            log.exception("on_reload callback %r failed", self._on_reload)

    def start(self) -> None:
        """Start the feeder's thread (no-op if it runs)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._thread_name(), daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and wait for the thread (idempotent; a reload in progress completes)."""
        self._stop.set()
        self._stopping()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
