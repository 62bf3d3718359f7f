"""``CertReloader``: certificate files on disk drive a cert manager, on file-system events.

Rotation tools rewrite a node's PEM files under it: cert-manager and Vault
agents every few hours, Kubernetes by swapping the ``..data`` symlink of a
mounted secret. The reloader watches the *directories* holding the files
with ``watchfiles`` (inotify on Linux; no stat polling), so an atomic rename
or a ``..data`` swap, which replace directory entries rather than write to
the files, is seen like any write.

What a caller may rely on:

* Nothing half-written is applied. After a change the whole set (chain,
  key, CA bundles) is read again and must parse (a PEM cut short does not,
  see ``gen.cert.load_pem_chain``), the key must match the certificate, and
  the manager must accept it (``gen.validate``); only then does it take
  effect, as one change (``CertAuthManager.update_all``). A set caught
  mid-rotation fails one of these and waits for the next event (and is tried
  again every ``retry`` seconds: a certificate not valid yet becomes valid).
* On failure the material in force stays; :attr:`last_error` says why and
  the manager's listeners hear of refused changes (``EventCertRejected``).
* SIGHUP (:meth:`install_sighup`, main thread only) or :meth:`reload` forces
  a reload now.
* One thread, started by :meth:`start` and ended (joined) by :meth:`stop`.

``watchfiles`` was picked for its inotify backend with a polling fallback,
its stop-event and timeout hooks (a watching thread that can be ended and
woken), and its debounce, which groups the several entries a rotation
touches into one batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Unpack

import watchfiles

from ergo_py.gen.cert import Certificate, CertPool
from ergo_py.gen.certmanager import CertAuthManager
from ergo_py.gen.errors import CertificateError, ErgoError, ErrIncorrect
from ergo_py.lib.cert import load_x509_key_pair
from ergo_py.lib.feed import FeedArgs, FileFeed

__all__ = ["CertReloader"]

log = logging.getLogger(__name__)

DEFAULT_RETRY = 5.0
_TICK_MS = 200  # how often the watching thread looks at its flags without events
_DEBOUNCE_MS = 100


class CertReloader(FileFeed):
    """Keeps ``manager`` in step with ``cert_file`` + ``key_file`` (and CA bundles).

    ``manager`` None: a ``gen.CertAuthManager`` is made from the files. The
    files are loaded on construction (``gen.CertificateError`` if they are
    unusable: a node never starts without a certificate). ``on_reload(state)``
    runs on the watching thread after a reload took effect.
    """

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        retry: float = DEFAULT_RETRY,
        **args: Unpack[FeedArgs],
    ) -> None:
        if isinstance(retry, bool) or not isinstance(retry, int | float) or retry <= 0:
            raise ErrIncorrect(f"retry must be > 0 s: {retry!r}")
        super().__init__(cert_file, key_file, **args)
        manager = args.get("manager")
        self.retry = float(retry)
        self._force = threading.Event()
        self._restore_sighup: Callable[[], None] | None = None
        self._failed_at: float | None = None
        digest, cert, client_cas, root_cas = self._read()
        if manager is None:
            manager = CertAuthManager(cert)
        self._manager = manager
        self._apply(cert, client_cas, root_cas)
        self._applied = digest

    # -- loading -----------------------------------------------------------

    def _read(self) -> tuple[str, Certificate, CertPool | None, CertPool | None]:
        """Everything, read and parsed now; raises CertificateError (naming the file)."""
        h = hashlib.sha256()
        for key, path in self._paths.items():
            if path is not None:
                try:
                    h.update(path.read_bytes())
                except OSError as exc:
                    raise CertificateError(f"cannot read {key} {path}: {exc}") from exc
                h.update(b"\0")
        paths = self._paths
        cert_file, key_file = self._pair
        try:
            cert = load_x509_key_pair(cert_file, key_file, self._password)
        except CertificateError as exc:
            raise CertificateError(f"{cert_file} + {key_file}: {exc}") from exc
        pools: list[CertPool | None] = []
        for key in ("client_ca_file", "root_ca_file"):
            path = paths[key]
            if path is None:
                pools.append(None)
                continue
            try:
                pool = CertPool.from_file(path)
            except CertificateError as exc:
                raise CertificateError(f"{key} {path}: {exc}") from exc
            pools.append(pool)
        return h.hexdigest(), cert, pools[0], pools[1]

    def _apply(
        self, cert: Certificate, client_cas: CertPool | None, root_cas: CertPool | None
    ) -> None:
        m = self._manager
        if isinstance(m, CertAuthManager):
            kwargs: dict[str, CertPool] = {}
            if client_cas is not None:
                kwargs["client_cas"] = client_cas
            if root_cas is not None:
                kwargs["root_cas"] = root_cas
            m.update_all(cert, **kwargs)
        elif cert != m.get_certificate():
            m.update(cert)

    def reload(self, force: bool = False) -> bool:
        """Read the files and apply them if they changed (``force``: even if not).

        True if the manager took them. Never raises for bad files (see the
        module docstring); thread-safe.
        """
        with self._lock:
            try:
                digest, cert, client_cas, root_cas = self._read()
                if digest == self._applied and not force:
                    self.last_error, self._failed_at = None, None
                    return False
                self._apply(cert, client_cas, root_cas)
            except (ErgoError, OSError) as exc:
                self.last_error = str(exc)
                self._failed_at = time.monotonic()
                log.warning("certificate files not applied, keeping the current ones: %s", exc)
                return False
            self._applied = digest
            self.last_error, self._failed_at = None, None
            self.reloads += 1
            state = self._manager.state()
        log.info(
            "certificate files applied: version %d, %.16s",
            state.version,
            state.certificate.fingerprint,
        )
        self._notify(state)
        return True

    # -- watching ------------------------------------------------------------

    def _dirs(self) -> list[Path]:
        dirs: list[Path] = []
        for path in self._paths.values():
            if path is not None and path.parent not in dirs:
                dirs.append(path.parent)
        return dirs

    def _relevant(self, changes: set[tuple[watchfiles.Change, str]]) -> bool:
        """A change to one of our files, or to an entry they resolve through (``..data``)."""
        names = {p.name for p in self._paths.values() if p is not None}
        for _, changed in changes:
            name = Path(changed).name
            if name in names or name.startswith(".."):
                return True
        return False

    def _due(self, changes: set[tuple[watchfiles.Change, str]]) -> bool:
        if changes:
            return self._relevant(changes)
        failed = self._failed_at
        return failed is not None and time.monotonic() - failed >= self.retry

    def _run(self) -> None:
        try:
            for changes in watchfiles.watch(
                *self._dirs(),
                stop_event=self._stop,
                debounce=_DEBOUNCE_MS,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                recursive=False,
            ):
                if self._stop.is_set():
                    return
                if self._force.is_set():
                    self._force.clear()
                    self.reload(force=True)
                elif self._due(changes):
                    self.reload()
        except Exception:  # a watcher that died must not go unnoticed
            log.exception("certificate file watching stopped")

    def _thread_name(self) -> str:
        return "ergo-py cert reload"

    def _stopping(self) -> None:
        if self._restore_sighup is not None:
            self._restore_sighup()

    def request_reload(self) -> None:
        """Have the watching thread reload now (what SIGHUP does; any thread)."""
        self._force.set()

    def install_sighup(self) -> Callable[[], None]:
        """SIGHUP forces a reload until :meth:`stop`, which puts the old handler back.

        Returns a callable that does that sooner. Only the main thread can set
        signal handlers: elsewhere this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("SIGHUP: reloading the certificate files")
            self.request_reload()

        old = signal.signal(signal.SIGHUP, handler)

        def restore() -> None:
            self._restore_sighup = None
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGHUP, old)

        self._restore_sighup = restore
        return restore

    def __repr__(self) -> str:
        return f"CertReloader({self._paths['cert_file']}, reloads={self.reloads})"
