"""What both certificate-file feeders share: checks, one thread, ``on_reload``, ``with``.

``lib.reload.CertReloader`` (file-system events, the whole set applied as one
change) and the older ``lib.certfiles.CertFileWatcher`` (stat polling, each
group of files on its own) differ in *when* they read and *what* they apply
together; the rest (the files and keywords they take, which managers they accept,
the one thread a feeder owns from ``start`` to ``stop``, the callback after
a reload) is this class.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Self, TypedDict, Unpack

from ergo_py.gen.cert import Password
from ergo_py.gen.certmanager import CertAuthManager, CertManager, CertState
from ergo_py.gen.errors import ErrIncorrect

__all__ = ["FeedArgs", "FileFeed"]

log = logging.getLogger(__name__)


class FeedArgs(TypedDict, total=False):
    """The keywords every feeder takes after ``cert_file, key_file`` (all default None):
    the CA bundles to watch too, the manager to feed (None: one is made from the
    files), the key's password, and ``on_reload(state)``."""

    client_ca_file: str | os.PathLike[str] | None
    root_ca_file: str | os.PathLike[str] | None
    manager: CertManager | None
    password: Password
    on_reload: Callable[[CertState], None] | None


class FileFeed(AbstractContextManager["FileFeed"]):
    """Base of a feeder: subclasses set ``_manager`` in ``__init__`` and write ``_run``.

    ``start`` runs ``_run`` on one daemon thread; ``stop`` sets ``_stop``
    (which ``_run`` must watch), calls ``_stopping`` and joins the thread.
    ``_paths`` holds the four files by keyword (None: a CA file not watched).
    """

    _manager: CertManager

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        **args: Unpack[FeedArgs],
    ) -> None:
        manager = args.get("manager")
        client_ca_file, root_ca_file = args.get("client_ca_file"), args.get("root_ca_file")
        if manager is not None and not isinstance(manager, CertManager):
            raise ErrIncorrect(f"manager must be a gen.CertManager, not {type(manager).__name__}")
        has_cas = client_ca_file is not None or root_ca_file is not None
        if has_cas and manager is not None and not isinstance(manager, CertAuthManager):
            raise ErrIncorrect("CA files need a gen.CertAuthManager")
        self._paths: dict[str, Path | None] = {
            "cert_file": Path(cert_file),
            "key_file": Path(key_file),
            "client_ca_file": Path(client_ca_file) if client_ca_file is not None else None,
            "root_ca_file": Path(root_ca_file) if root_ca_file is not None else None,
        }
        self._pair = (Path(cert_file), Path(key_file))
        self._password = args.get("password")
        self._on_reload = args.get("on_reload")
        self._lock = threading.Lock()  # one reload at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.reloads = 0

    @property
    def files(self) -> dict[str, str | None]:
        """The watched paths (``None`` for a CA file that is not watched)."""
        return {k: str(p) if p is not None else None for k, p in self._paths.items()}

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
