"""``CertFileWatcher``: keep a cert manager in step with certificate files on disk.

Tools such as cert-manager, certbot or Vault agents rotate a node's
certificate by rewriting PEM files. The watcher loads the chain + key (and,
optionally, the client-CA and root-CA pool files) into a manager, then polls
the files' ``stat`` (mtime_ns, size, inode) on its own daemon thread and
re-applies whatever changed.

What a caller may rely on:

* A change is applied only once the files' stat has been the same on two
  consecutive polls, so a file caught half-written is not read.
* Anything that fails to load (unparsable PEM, a key that does not match the
  certificate, an expired certificate, a missing file) never replaces what
  the manager holds: the error is logged with the file names and kept in
  :attr:`CertFileWatcher.last_error`; the next change of those files is tried
  again (and the same files again after ``retry_after`` seconds, which covers
  a certificate that was not yet valid).
* The key pair, the client-CA pool and the root-CA pool are three separate
  groups: a broken CA file does not hold back a new certificate.
* Files are only read, never copied: the private key stays where the user
  put it (the manager loads it through memory, see ``gen.certmanager``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

from ergo_py.gen.cert import Certificate, CertPool
from ergo_py.gen.certmanager import (
    CertAuthManager,
    CertManager,
    create_cert_auth_manager,
)
from ergo_py.gen.errors import CertificateError, ErgoError, ErrIncorrect
from ergo_py.lib.cert import load_x509_key_pair
from ergo_py.lib.feed import FeedArgs, FileFeed

__all__ = ["DEFAULT_POLL_INTERVAL", "MAX_POLL_INTERVAL", "CertFileWatcher"]

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 1.0
MAX_POLL_INTERVAL = 60.0
DEFAULT_RETRY_AFTER = 30.0

_Stat = tuple[int, int, int] | None  # (mtime_ns, size, inode); None: missing
_Sig = tuple[_Stat, ...]


def _stat(path: Path) -> _Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class _Group:
    """Files that are loaded and applied together, and what we know about them."""

    what: str
    paths: tuple[Path, ...]
    applied: _Sig | None = None  # signature of the files now in force
    seen: _Sig | None = None  # signature at the previous poll
    failed: _Sig | None = None  # signature whose load failed
    failed_at: float = 0.0

    def names(self) -> str:
        return " + ".join(str(p) for p in self.paths)

    def signature(self) -> _Sig:
        return tuple(_stat(p) for p in self.paths)


class CertFileWatcher(FileFeed):
    """Loads certificate files into a cert manager and reloads them when they change.

    ``manager``: the manager to feed; ``None`` creates a ``gen.CertAuthManager``
    from the files (see :attr:`manager`). CA files need a ``CertAuthManager``.
    The files are loaded and applied on construction, so a bad initial set
    raises ``gen.CertificateError`` here instead of starting a node without a
    certificate. Polling runs on a daemon thread between :meth:`start` and
    :meth:`stop` (or inside ``with``), every ``interval`` seconds (0 < interval
    <= 60). :meth:`check` does one poll by hand (for tests and tools).

    ``on_reload(state)`` runs on the polling thread after a poll applied a
    change (e.g. to move live connections onto the new certificate); an
    exception it raises is logged and ignored.
    """

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        retry_after: float = DEFAULT_RETRY_AFTER,
        **args: Unpack[FeedArgs],
    ) -> None:
        if not isinstance(interval, int | float) or not 0 < interval <= MAX_POLL_INTERVAL:
            raise ErrIncorrect(f"poll interval must be in (0, {MAX_POLL_INTERVAL}] s: {interval!r}")
        if not isinstance(retry_after, int | float) or retry_after <= 0:
            raise ErrIncorrect(f"retry_after must be > 0 s: {retry_after!r}")
        super().__init__(cert_file, key_file, **args)
        self.interval = float(interval)
        self.retry_after = float(retry_after)
        client_ca, root_ca = self._paths["client_ca_file"], self._paths["root_ca_file"]
        self._cert_group = _Group("certificate", self._pair)
        self._client_cas = _Group("client CAs", (client_ca,)) if client_ca is not None else None
        self._root_cas = _Group("root CAs", (root_ca,)) if root_ca is not None else None
        self._manager = self._initial_load(args.get("manager"))

    # -- loading -----------------------------------------------------------

    def _groups(self) -> list[_Group]:
        return [g for g in (self._cert_group, self._client_cas, self._root_cas) if g is not None]

    def _load_pair(self) -> Certificate:
        cert_file, key_file = self._pair
        return load_x509_key_pair(cert_file, key_file, self._password)

    @staticmethod
    def _load_pool(group: _Group) -> CertPool:
        pool = CertPool.from_file(group.paths[0])
        if len(pool) == 0:
            raise CertificateError("no certificates in the file")
        return pool

    def _initial_load(self, manager: CertManager | None) -> CertManager:
        sigs = {id(g): g.signature() for g in self._groups()}
        try:
            cert = self._load_pair()
        except CertificateError as exc:
            raise CertificateError(f"{self._cert_group.names()}: {exc}") from exc
        if manager is None:
            manager = create_cert_auth_manager(cert)
        elif manager.get_certificate().fingerprint != cert.fingerprint:
            manager.update(cert)
        for group, setter in self._pool_setters(manager):
            try:
                setter(self._load_pool(group))
            except CertificateError as exc:
                raise CertificateError(f"{group.what} from {group.names()}: {exc}") from exc
        for g in self._groups():
            g.applied = g.seen = sigs[id(g)]
        return manager

    def _pool_setters(
        self, manager: CertManager
    ) -> list[tuple[_Group, Callable[[CertPool | None], None]]]:
        out: list[tuple[_Group, Callable[[CertPool | None], None]]] = []
        if isinstance(manager, CertAuthManager):
            if self._client_cas is not None:
                out.append((self._client_cas, manager.set_client_cas))
            if self._root_cas is not None:
                out.append((self._root_cas, manager.set_root_cas))
        return out

    def _apply(self, group: _Group) -> bool:
        """Load and apply ``group``; True if the manager changed. Raises CertificateError."""
        m = self._manager
        if group is self._cert_group:
            cert = self._load_pair()
            if cert.fingerprint == m.get_certificate().fingerprint:
                return False  # rewritten with the same content
            m.update(cert)
            return True
        pool = self._load_pool(group)
        if not isinstance(m, CertAuthManager):  # ruled out by __init__
            raise ErrIncorrect("CA files need a gen.CertAuthManager")
        if group is self._client_cas:
            current, setter = m.client_cas(), m.set_client_cas
        else:
            current, setter = m.root_cas(), m.set_root_cas
        if current is not None and current.fingerprints == pool.fingerprints:
            return False
        setter(pool)
        return True

    # -- polling -----------------------------------------------------------

    def check(self) -> bool:
        """One poll: apply every group whose files changed and then held still.

        Returns True if the manager changed. Never raises for bad files (see
        the module docstring); thread-safe.
        """
        changed = False
        with self._lock:
            now = time.monotonic()
            for group in self._groups():
                sig = group.signature()
                stable, group.seen = sig == group.seen, sig
                if sig == group.applied:
                    group.failed = None  # e.g. a bad edit was reverted
                    continue
                if not stable:
                    continue
                if sig == group.failed and now - group.failed_at < self.retry_after:
                    continue
                try:
                    if self._apply(group):
                        changed = True
                        log.info("reloaded %s from %s", group.what, group.names())
                    group.applied, group.failed = sig, None
                except (ErgoError, OSError) as exc:
                    group.failed, group.failed_at = sig, now
                    self.last_error = f"{group.what} from {group.names()}: {exc}"
                    log.error("cannot reload %s; keeping the current one", self.last_error)
            if changed:
                self.reloads += 1
            if self._all_applied():
                self.last_error = None
        if changed:
            self._notify(self._manager.state())
        return changed

    def _all_applied(self) -> bool:
        return all(g.failed is None for g in self._groups())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # a bug must not end the watching silently
                log.exception("certificate file watcher poll failed")

    def _thread_name(self) -> str:
        return f"cert-watch {self._pair[0].name}"

    def __repr__(self) -> str:
        return (
            f"CertFileWatcher({self._cert_group.names()}, interval={self.interval}, "
            f"running={self.running}, reloads={self.reloads})"
        )
