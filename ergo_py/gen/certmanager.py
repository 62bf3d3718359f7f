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

Why over 600 lines: the state, the contexts built from it and the one swap
that makes both current belong together; what the trust lifecycle adds
around them lives beside it (checks in ``gen/validate.py``, renewal in
``gen/renew.py``, the connection policy in ``node/trust.py``). The context
builders are the next thing to move out if it grows.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from ergo_py.gen import validate
from ergo_py.gen.cert import Certificate, CertPool, ClientAuth
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


_VERIFY_MODE = {
    ClientAuth.NO_CLIENT_CERT: ssl.CERT_NONE,
    ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN: ssl.CERT_OPTIONAL,
    ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT: ssl.CERT_REQUIRED,
}


@dataclass(frozen=True, slots=True, eq=False)
class CertState:
    """One immutable snapshot of a manager's settings.

    ``generation`` grows by one on every change of any setting; ``version``
    grows by one on every successful certificate update. The certificate and
    the version always belong together. Pools are read-only copies; ``None``
    means the system default trust store (as Go's nil pool). Compared and
    hashed by identity: each change makes a new snapshot.
    """

    generation: int
    version: int
    certificate: Certificate
    client_cas: CertPool | None = None
    root_cas: CertPool | None = None
    client_auth: ClientAuth = ClientAuth.NO_CLIENT_CERT
    server_name: str = ""

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        """The listener ``verify_mode`` for this state's client-auth mode."""
        return _VERIFY_MODE[self.client_auth]


class StateContext(ssl.SSLContext):
    """An ``SSLContext`` that knows the :class:`CertState` it was built from.

    After a handshake, ``ssl_object.context.cert_state`` tells which
    certificate version the connection presented.
    """

    cert_state: CertState


def verify_mode_for(mode: ClientAuth) -> ssl.VerifyMode:
    """The listener ``verify_mode`` for a supported client-auth mode.

    ErrUnsupported for the two modes the standard library cannot express.
    """
    try:
        return _VERIFY_MODE[ClientAuth(mode)]
    except (KeyError, ValueError) as exc:
        raise ErrUnsupported(f"client-auth mode {mode!r} has no ssl verify mode") from exc


def cert_state_of(ctx: ssl.SSLContext) -> CertState | None:
    """The state a manager built ``ctx`` from (None for a context no manager built)."""
    state = getattr(ctx, "cert_state", None)
    return state if isinstance(state, CertState) else None


# ---------------------------------------------------------------------------
# context building


def _write_secret(data: bytes) -> tuple[str, Callable[[], None]]:
    """A path from which OpenSSL can read ``data`` and a cleanup callable.

    Prefers an anonymous memfd (never on any filesystem); falls back to a
    0600 temp file in a RAM-backed directory if there is one, unlinked by the
    cleanup.
    """
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        try:
            fd = memfd_create("ergo-py-cert", getattr(os, "MFD_CLOEXEC", 0))
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                _write_all(fd, data)
            except OSError:
                os.close(fd)
                raise
            return f"/proc/self/fd/{fd}", lambda: os.close(fd)
    tmpdir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="ergo-py-", dir=tmpdir)  # mode 0600
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)

    def _cleanup() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    return path, _cleanup


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _load_certificate(ctx: ssl.SSLContext, cert: Certificate) -> None:
    chain_pem, key_pem = cert.to_pem()
    path, cleanup = _write_secret(chain_pem + key_pem)
    try:
        ctx.load_cert_chain(path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CertificateError(f"certificate cannot be used for TLS: {exc}") from exc
    finally:
        cleanup()


def _load_trust(ctx: ssl.SSLContext, pool: CertPool | None, purpose: ssl.Purpose) -> None:
    if pool is None:
        ctx.load_default_certs(purpose)
        return
    if len(pool) == 0:
        return  # an empty pool trusts nobody
    try:
        ctx.load_verify_locations(cadata=pool.to_pem())
    except (ssl.SSLError, ValueError) as exc:
        raise CertificateError(f"CA pool cannot be used for TLS: {exc}") from exc


def _new_context(protocol: int, state: CertState) -> StateContext:
    ctx = StateContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.cert_state = state
    return ctx


def build_server_context(state: CertState) -> StateContext:
    """A listener context for ``state`` (raises CertificateError if it cannot load)."""
    ctx = _new_context(ssl.PROTOCOL_TLS_SERVER, state)
    ctx.num_tickets = 0  # no resumption: it could bypass a later CA change
    _load_certificate(ctx, state.certificate)
    ctx.verify_mode = state.verify_mode
    if ctx.verify_mode != ssl.CERT_NONE:
        _load_trust(ctx, state.client_cas, ssl.Purpose.CLIENT_AUTH)
    return ctx


def build_client_context(state: CertState, insecure_skip_verify: bool = False) -> StateContext:
    """A dialer context for ``state``: presents the certificate, verifies the server.

    ``check_hostname`` is on only when a server name is set; otherwise the
    network layer checks the node identity from the peer's URI SAN.
    """
    ctx = _new_context(ssl.PROTOCOL_TLS_CLIENT, state)
    _load_certificate(ctx, state.certificate)
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.check_hostname = bool(state.server_name)
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_trust(ctx, state.root_cas, ssl.Purpose.SERVER_AUTH)
    return ctx


class _Built:
    """A state and its contexts.

    Building a context costs a few milliseconds (OpenSSL parses the key and
    the CA pool), on the thread that changes the manager. Both sides are
    built up front: the in-memory handshake that validates a change (see
    ``gen.validate``) runs between them. The insecure client context is
    built on first use.
    """

    __slots__ = ("_built", "_lock", "state")

    def __init__(self, state: CertState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._built: dict[str, StateContext] = {
            "server": build_server_context(state),
            "client": build_client_context(state),
        }

    @property
    def server_built(self) -> bool:
        return "server" in self._built

    @property
    def client_built(self) -> bool:
        return "client" in self._built

    @property
    def server(self) -> StateContext:
        return self._get("server")

    @property
    def client(self) -> StateContext:
        return self._get("client")

    def insecure_client(self) -> StateContext:
        return self._get("insecure")

    def probe_client(self) -> StateContext:
        """The client context without the server-name check (the probe's, only)."""
        return self._get("probe_client")

    def unverifying_server(self) -> StateContext:
        """A server context that asks for no client certificate (the probe's, only)."""
        return self._get("unverifying")

    def _get(self, side: str) -> StateContext:
        ctx = self._built.get(side)
        if ctx is None:
            with self._lock:
                ctx = self._built.get(side)
                if ctx is None:
                    ctx = self._built[side] = _BUILD[side](self.state)
        return ctx


_BUILD: dict[str, Callable[[CertState], StateContext]] = {
    "server": build_server_context,
    "client": build_client_context,
    "insecure": lambda state: build_client_context(state, insecure_skip_verify=True),
    "probe_client": lambda state: build_client_context(replace(state, server_name="")),
    "unverifying": lambda state: build_server_context(
        replace(state, client_auth=ClientAuth.NO_CLIENT_CERT)
    ),
}


def _check_usable(cert: object, now: datetime | None = None) -> Certificate:
    return validate.check_usable(cert, now)


def _pools(state: CertState) -> dict[str, CertPool | None]:
    return {"client CAs": state.client_cas, "root CAs": state.root_cas}


def _probe(built: _Built) -> validate.Probe:
    """The contexts the in-memory handshake runs between (see ``gen.validate``)."""
    # A side verifies only against a pool our own certificate chains to: a
    # peer with material like ours is what is probed. The system store, pools
    # pinning other nodes' certificates and the server name (which names the
    # peers' certificates) say nothing about ours.
    state = built.state
    cert = state.certificate
    if state.root_cas is None or not validate.chains_to(cert, state.root_cas):
        client = built.insecure_client()
    else:
        client = built.client if not state.server_name else built.probe_client()
    if state.client_cas is not None and validate.chains_to(cert, state.client_cas):
        server = built.server
    else:
        server = built.unverifying_server()
    return validate.Probe(server, client, None)


# ---------------------------------------------------------------------------
# managers


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
        self._built = _Built(CertState(generation=1, version=1, certificate=cert))
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
                    _pools(old),
                    new.certificate,
                    _pools(new),
                    self._node_names.items,
                )
                built = _Built(new)
                old_built = self._built
                validate.check_handshake(_probe(built), lambda: _probe(old_built))
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
        if mode not in _VERIFY_MODE:
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
