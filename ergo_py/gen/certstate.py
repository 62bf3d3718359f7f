"""A manager's state, and the TLS contexts built from it.

A :class:`CertState` is one immutable snapshot of a manager's settings
(certificate, CA pools, client-auth mode, server name); :class:`Built`
holds one with its ``ssl.SSLContext`` objects, built on the changing
thread before the state takes effect and never mutated afterwards. Key
material reaches OpenSSL through a memfd (an unlinked 0600 file in a
RAM-backed directory where memfd is missing): it never touches persistent
disk. The managers themselves are ``gen/certmanager.py``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from ergo_py.gen import validate
from ergo_py.gen.cert import Certificate, CertPool, ClientAuth
from ergo_py.gen.errors import CertificateError, ErrUnsupported

# The listener verify_mode of each client-auth mode the ssl module can express.
VERIFY_MODES = {
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
        return VERIFY_MODES[self.client_auth]


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
        return VERIFY_MODES[ClientAuth(mode)]
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


class Built:
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


def pools_of(state: CertState) -> dict[str, CertPool | None]:
    return {"client CAs": state.client_cas, "root CAs": state.root_cas}


def probe_of(built: Built) -> validate.Probe:
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
