"""Certificate managers: one live certificate (and TLS trust settings) per node.

A manager holds one immutable :class:`CertState` at a time. Every change
(``update``, any setter) builds the state's server and client
``ssl.SSLContext`` objects first, on the caller's thread; only when they load
does the new state replace the old one, by a single reference swap. A failed
change raises :class:`CertificateError` and leaves the previous state and
contexts in force. Contexts are never mutated once handed out, so connections
that are already up keep what they were made with.

Readers (``state()``, ``server_context()``, ``get_certificate()`` ...) take
no lock and always see one consistent snapshot. Writers are serialised.

The state and the contexts built from it are ``gen/certstate.py``; what
the trust lifecycle adds around a manager lives beside it (checks in
``gen/validate.py``, renewal in ``gen/renew.py``, the connection policy in
``node/trust.py``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from ergo_py.gen import validate
from ergo_py.gen.cert import Certificate, CertPool, ClientAuth
from ergo_py.gen.certstate import (
    VERIFY_MODES,
    Built,
    CertState,
    StateContext,
    pools_of,
    probe_of,
)

# Also importable from here, where they were before gen/certstate.py.
from ergo_py.gen.certstate import build_client_context as build_client_context
from ergo_py.gen.certstate import build_server_context as build_server_context
from ergo_py.gen.certstate import cert_state_of as cert_state_of
from ergo_py.gen.certstate import verify_mode_for as verify_mode_for
from ergo_py.gen.errors import CertificateError, ErrIncorrect, ErrUnsupported
from ergo_py.gen.renew import (
    DEFAULT_RENEW_AT,
    DEFAULT_RENEW_JITTER,
    Renewer,
    RenewSchedule,
)

__all__ = [
    "CertAuthManager",
    "CertManager",
    "CertState",
    "RetiredPolicy",
    "StateContext",
    "cert_state_of",
    "create_cert_auth_manager",
    "create_cert_manager",
    "verify_mode_for",
]

log = logging.getLogger(__name__)

Subscriber = Callable[["CertState"], None]
# A listener hears every change attempt: (old, new, None) after a change in
# force, (old, None, error) after a refused one.
Listener = Callable[["CertState", "CertState | None", "CertificateError | None"], None]

DEFAULT_GRACE = 30.0
"""Seconds a ``DRAIN`` policy spreads the replacement of retired connections over."""


class RetiredPolicy(enum.Enum):
    """What happens to a connection whose authenticating material was retired."""

    KEEP = "keep"  # Ergo's behaviour: it lives on with what it was made with
    DRAIN = "drain"  # replaced through the planned hand-over within the grace period
    CLOSE = "close"  # closed at once


def _check_usable(cert: object, now: datetime | None = None) -> Certificate:
    return validate.check_usable(cert, now)


_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., None])


class _Added(Generic[_T]):
    """Items in a copy-on-write tuple: adding and removing take a lock, reading
    ``items`` (on a changing or handshaking thread) does not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: tuple[_T, ...] = ()

    def add(self, item: _T) -> Callable[[], None]:
        """Add ``item``; returns the callable that removes it again."""
        with self._lock:
            self.items = (*self.items, item)

        def remove() -> None:
            with self._lock:
                items = list(self.items)
                with contextlib.suppress(ValueError):
                    items.remove(item)
                self.items = tuple(items)

        return remove


class _Callbacks(_Added[_F]):
    """Added callbacks, called in order; one that raises is logged and skipped."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self._what = what

    def call(self, *args: Any) -> None:
        for callback in self.items:
            try:
                callback(*args)
            except Exception:
                log.exception("%s %r failed", self._what, callback)


class CertManager:
    """Holds the node's current certificate; rotated live with :meth:`update`.

    Thread-safe. Every new TLS handshake uses the certificate current at that
    moment; connections already up keep theirs. A plain CertManager behaves
    like a :class:`CertAuthManager` left at its defaults (system trust store,
    ``NO_CLIENT_CERT``, no server name).
    """

    def __init__(self, cert: Certificate) -> None:
        cert = _check_usable(cert)
        self._write_lock = threading.Lock()
        self._subscribers = _Callbacks[Subscriber]("certificate manager subscriber")
        self._listeners = _Callbacks[Listener]("certificate manager listener")
        self._built = Built(CertState(generation=1, version=1, certificate=cert))
        # Nodes this manager serves: a new certificate must keep naming them.
        self._node_names = _Added[str]()
        self._retired: tuple[RetiredPolicy, float] = (RetiredPolicy.KEEP, DEFAULT_GRACE)
        self._policy_listeners = _Callbacks[Callable[[], None]]("retired-policy listener")
        self._renewer: Renewer | None = None

    # -- reading (lock-free: one reference read)

    def state(self) -> CertState:
        """The current settings as one immutable snapshot."""
        return self._built.state

    @property
    def version(self) -> int:
        """+1 per successful :meth:`update` (the first certificate is version 1)."""
        return self._built.state.version

    def get_certificate(self) -> Certificate:
        """The current certificate."""
        return self._built.state.certificate

    def get_certificate_func(self) -> Callable[..., Certificate]:
        """A callable that returns the certificate current at each call (arguments ignored)."""

        def current(*_args: Any) -> Certificate:
            return self._built.state.certificate

        return current

    def server_context(self) -> StateContext:
        """The listener context for the current state (cached; never mutated)."""
        return self._built.server

    def client_context(self, insecure_skip_verify: bool = False) -> StateContext:
        """The dialer context for the current state (cached; never mutated).

        With ``insecure_skip_verify`` the server certificate is not verified
        (the network layer can still bind it by fingerprint).
        """
        built = self._built
        if insecure_skip_verify:
            return built.insecure_client()
        return built.client

    # -- changing

    def update(self, cert: Certificate) -> None:
        """Make ``cert`` current for every new handshake.

        Raises CertificateError (keeping the previous certificate) if the key
        does not match, the certificate is expired or not yet valid, or it
        cannot be loaded into a TLS context.
        """
        previous = self._built.state.certificate
        fingerprint = getattr(cert, "fingerprint", "?")
        try:

            def change(old: CertState) -> CertState:
                return replace(old, certificate=_check_usable(cert), version=old.version + 1)

            new = self._change(change)
            checked = new.certificate
        except CertificateError as exc:
            log.warning(
                "certificate update rejected: %s (new %.16s, keeping %.16s)",
                exc,
                fingerprint,
                previous.fingerprint,
            )
            raise
        log.info(
            "certificate updated to version %d: %.16s (was %.16s), valid until %s",
            new.version,
            checked.fingerprint,
            previous.fingerprint,
            checked.not_after.isoformat(),
        )

    # -- trust lifecycle

    def expect_node_name(self, name: str) -> Callable[[], None]:
        """Refuse certificates that stop naming node ``name``; returns an undo callable.

        A node calls this for its own name when it starts with this manager.
        """
        return self._node_names.add(str(name))

    def set_retired_policy(self, policy: RetiredPolicy, grace: float = DEFAULT_GRACE) -> None:
        """What happens to a connection whose authenticating material was retired.

        Retired: our certificate was updated since the connection was made,
        the CA that verified the peer left the pool, or the peer's
        certificate expired. ``KEEP`` (default, as Ergo): nothing.
        ``DRAIN``: each such connection is replaced with current material
        through the planned hand-over (``network.reconnect``), spread over
        ``grace`` seconds; one that cannot be replaced by then is closed.
        ``CLOSE``: closed at once (links and monitors fire).
        """
        try:
            policy = RetiredPolicy(policy)
        except ValueError as exc:
            raise ErrIncorrect(f"unknown retired policy {policy!r}") from exc
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
            raise ErrIncorrect(f"grace must be a number of seconds >= 0, not {grace!r}")
        self._retired = (policy, float(grace))
        log.info("retired-material policy: %s (grace %.1f s)", policy.name, grace)
        self._policy_listeners.call()

    def retired_policy(self) -> tuple[RetiredPolicy, float]:
        """(policy, grace seconds) set by :meth:`set_retired_policy`."""
        return self._retired

    def add_policy_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each :meth:`set_retired_policy`; returns a remover."""
        return self._policy_listeners.add(listener)

    def set_renew(
        self,
        func: Callable[[], Certificate] | None,
        at: float = DEFAULT_RENEW_AT,
        jitter: float = DEFAULT_RENEW_JITTER,
    ) -> None:
        """Renew the certificate automatically: ``func()`` goes through :meth:`update`.

        Called at ``at`` of the current certificate's lifetime, plus or minus
        ``jitter`` (a fraction of the lifetime, drawn once per certificate),
        so a fleet does not renew at once. Runs on a thread this manager
        owns until ``set_renew(None)`` or :meth:`close`. A failure (``func``
        raising, or ``update`` refusing the result) is logged, reported to
        the listeners like any refused change, and retried (see
        ``gen.renew``). With ``lib.CertificateAuthority``:
        ``manager.set_renew(ca.renewer("a@host"))``.
        """
        old, self._renewer = self._renewer, None
        if old is not None:
            old.stop()
        if func is None:
            return
        if not callable(func):
            raise ErrIncorrect("set_renew needs a callable (or None)")
        self._renewer = Renewer(self, func, RenewSchedule(at, jitter))
        self._renewer.start()

    def renewer(self) -> Renewer | None:
        """The running renewal (its schedule and last error), or None."""
        return self._renewer

    def close(self) -> None:
        """Stop the renewal thread, if any (idempotent); the certificate stays usable."""
        self.set_renew(None)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(new_state)`` after every change; returns an unsubscribe callable.

        Callbacks run synchronously on the thread that made the change, after
        the new state is in force and before the setter returns; a callback
        that raises is logged and otherwise ignored. Changes made concurrently
        from several threads may be reported out of order: compare
        ``state.generation``.
        """
        if not callable(callback):
            raise ErrIncorrect("subscribe needs a callable")
        return self._subscribers.add(callback)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(old, new, error)`` after every change attempt; returns a remover.

        After a change in force: ``(old_state, new_state, None)``; after a
        refused one (``CertificateError``, the old state stays):
        ``(current_state, None, error)``. Called on the changing thread, after
        the subscribers; one that raises is logged and ignored. What the
        node's events and metrics are made from.
        """
        if not callable(listener):
            raise ErrIncorrect("add_listener needs a callable")
        return self._listeners.add(listener)

    def _change(self, change: Callable[[CertState], CertState]) -> CertState:
        refused: CertificateError | None = None
        with self._write_lock:
            old = self._built.state
            try:
                new = change(old)
                new = replace(new, generation=old.generation + 1)
                # Raises CertificateError: nothing changes.
                validate.check_change(
                    old.certificate,
                    pools_of(old),
                    new.certificate,
                    pools_of(new),
                    self._node_names.items,
                )
                built = Built(new)
                old_built = self._built
                validate.check_handshake(probe_of(built), lambda: probe_of(old_built))
            except CertificateError as exc:
                refused = exc
            else:
                self._built = built
        if refused is not None:
            self._listeners.call(old, None, refused)
            raise refused
        log.debug("certificate manager generation %d (version %d)", new.generation, new.version)
        self._subscribers.call(new)
        self._listeners.call(old, new, None)
        return new

    def __repr__(self) -> str:
        s = self._built.state
        return (
            f"{type(self).__name__}(version={s.version}, generation={s.generation}, "
            f"fingerprint={s.certificate.fingerprint[:16]}...)"
        )


_KEEP = object()  # update_all: leave this part as it is


def _frozen_pool(pool: object, what: str) -> CertPool | None:
    if pool is None:
        return None
    if not isinstance(pool, CertPool):
        raise CertificateError(f"{what} must be a gen.CertPool or None, not {type(pool).__name__}")
    return pool.frozen()


class CertAuthManager(CertManager):
    """A :class:`CertManager` plus the trust settings of both TLS sides.

    Client CAs and client-auth mode apply to listeners, root CAs and server
    name to dialers. Each setter takes effect for the next handshake, from any
    thread. Defaults as Ergo: both pools ``None`` (system trust store),
    ``NO_CLIENT_CERT``, empty server name: creating one does not enforce mTLS.
    """

    def update_all(
        self,
        cert: Certificate | None = None,
        *,
        client_cas: CertPool | object | None = _KEEP,
        root_cas: CertPool | object | None = _KEEP,
    ) -> None:
        """Change the certificate and the CA pools in one step, validated together.

        For material that moves as a unit (a Kubernetes secret with
        ``tls.crt``, ``tls.key`` and ``ca.crt`` swapped at once): each part
        alone might strand the others. Omitted parts stay; a certificate
        equal to the current one does not count as an update.
        """

        def change(old: CertState) -> CertState:
            new = old
            if cert is not None and cert != old.certificate:
                new = replace(new, certificate=_check_usable(cert), version=old.version + 1)
            if client_cas is not _KEEP:
                new = replace(new, client_cas=_frozen_pool(client_cas, "client CAs"))
            if root_cas is not _KEEP:
                new = replace(new, root_cas=_frozen_pool(root_cas, "root CAs"))
            return new

        self._change(change)

    def set_client_cas(self, pool: CertPool | None) -> None:
        """CAs that verify dialers' certificates (``None``: system store). Copied."""
        self._change(lambda s: replace(s, client_cas=_frozen_pool(pool, "client CAs")))

    def client_cas(self) -> CertPool | None:
        return self._built.state.client_cas

    def set_root_cas(self, pool: CertPool | None) -> None:
        """CAs that verify listeners' certificates when dialing (``None``: system store)."""
        self._change(lambda s: replace(s, root_cas=_frozen_pool(pool, "root CAs")))

    def root_cas(self) -> CertPool | None:
        return self._built.state.root_cas

    def set_client_auth(self, mode: ClientAuth) -> None:
        """What listeners ask of dialers' certificates.

        ``REQUEST_CLIENT_CERT`` and ``REQUIRE_ANY_CLIENT_CERT`` raise
        ErrUnsupported: the standard library verifies every certificate it
        requests, so "request without verifying" cannot be expressed, and a
        silent switch to a stricter or weaker mode would change who may
        connect.
        """
        try:
            mode = ClientAuth(mode)
        except ValueError as exc:
            raise CertificateError(f"unknown client-auth mode {mode!r}") from exc
        if mode not in VERIFY_MODES:
            raise ErrUnsupported(
                f"{mode.name} is not supported: Python's ssl module verifies every client "
                "certificate it requests, so it cannot request one without verifying it. "
                "Use VERIFY_CLIENT_CERT_IF_GIVEN or REQUIRE_AND_VERIFY_CLIENT_CERT with "
                "set_client_cas() holding the CA (or the pinned self-signed certificates) "
                "you accept."
            )
        self._change(lambda s: replace(s, client_auth=mode))

    def client_auth(self) -> ClientAuth:
        return self._built.state.client_auth

    def set_server_name(self, name: str) -> None:
        """The name dialers verify the server certificate against ("" = node identity only)."""
        if not isinstance(name, str):
            raise CertificateError(f"server name must be str, not {type(name).__name__}")
        self._change(lambda s: replace(s, server_name=name))

    def server_name(self) -> str:
        return self._built.state.server_name


def create_cert_manager(cert: Certificate) -> CertManager:
    """A manager for ``cert``; CertificateError if it is unusable (see ``update``)."""
    return CertManager(cert)


def create_cert_auth_manager(cert: Certificate) -> CertAuthManager:
    """A manager with trust settings, at Ergo's defaults (no mTLS enforced)."""
    return CertAuthManager(cert)
