"""Checks a certificate manager runs before new material takes effect.

Every change to a manager (``update()``, a setter, a file reload) goes
through :func:`check_change` with the state in force and the proposed one.
The rule behind every check is *relative*: a change may not take away
something that works now. A manager whose current certificate chains to its
CA pool may not take one that does not; a CA bundle may not drop the CA that
signs our own certificate; a certificate naming this node may not be
replaced by one for another node. Settings that never held (a self-signed
development certificate under the system trust store) are not demanded
afterwards, so no working set-up starts failing.

Then the new material shakes hands with itself, in memory (two
``ssl.SSLObject`` over ``ssl.MemoryBIO``, no socket, no event loop): our new
client context against our new server context, which is what a peer holding
the same material would do. A refusal raises :class:`CertValidationError`,
which names the check that failed and how to fix it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from ergo_py.gen.cert import Certificate, CertPool, _public_der
from ergo_py.gen.errors import CertificateError

__all__ = [
    "CHECKS",
    "CertValidationError",
    "Probe",
    "anchor_of",
    "chains_to",
    "check_change",
    "check_handshake",
    "check_usable",
    "handshake_in_memory",
]

CHECKS = ("key", "validity", "usage", "node_name", "chain", "trust", "handshake")
"""Every check's name, as :attr:`CertValidationError.check` and the metrics label."""

_USAGES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}
_MAX_CHAIN = 8  # intermediates walked at most, so a looping chain ends


class CertValidationError(CertificateError):
    """New certificate material was refused; the material in force stays.

    ``check``: which check failed (one of :data:`CHECKS`); ``fix``: what to
    do about it. ``str()`` says both.
    """

    def __init__(self, check: str, message: str, fix: str) -> None:
        super().__init__(f"{check}: {message} (fix: {fix})")
        self.check = check
        self.message = message
        self.fix = fix


@dataclass(frozen=True, slots=True)
class Probe:
    """What the in-memory handshake needs of one state: its two contexts.

    ``server_name``: what the client checks the server's certificate against
    (None: no name check; the client context must not ask for one then).
    """

    server: ssl.SSLContext
    client: ssl.SSLContext
    server_name: str | None


# ---------------------------------------------------------------------------
# single checks


def check_usable(cert: object, now: datetime | None = None) -> Certificate:
    """``cert`` is a Certificate whose key matches and which is valid now."""
    if not isinstance(cert, Certificate):
        raise CertificateError(f"expected a gen.Certificate, got {type(cert).__name__}")
    try:
        leaf_pub = _public_der(cert.leaf.public_key())
        key_pub = _public_der(cert.private_key.public_key())
    except (ValueError, TypeError, AttributeError) as exc:
        raise CertValidationError(
            "key", f"cannot read the certificate's keys: {exc}", "give a supported key type"
        ) from exc
    if leaf_pub != key_pub:
        raise CertValidationError(
            "key",
            "private key does not match the certificate's public key",
            "pair the certificate with the key it was issued for",
        )
    when = now or datetime.now(UTC)
    if when < cert.not_before:
        raise CertValidationError(
            "validity",
            f"certificate is not yet valid (not before {cert.not_before.isoformat()})",
            "check the clock, or apply the certificate once its validity starts",
        )
    if when > cert.not_after:
        raise CertValidationError(
            "validity",
            f"certificate has expired (not after {cert.not_after.isoformat()})",
            "issue a new certificate",
        )
    return cert


def usages(cert: x509.Certificate) -> frozenset[str]:
    """The TLS usages (serverAuth, clientAuth) a certificate allows; no EKU allows both."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return frozenset(_USAGES.values())
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        return frozenset(_USAGES.values())
    return frozenset(name for oid, name in _USAGES.items() if oid in eku)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def anchor_of(
    leaf: x509.Certificate, intermediates: Iterable[x509.Certificate], pool: CertPool
) -> x509.Certificate | None:
    """The CA of ``pool`` that ``leaf`` chains to (through ``intermediates``), or None.

    A certificate found in the pool itself is its own anchor (pinned
    self-signed peers). Signatures are verified; dates and usages are left
    to the TLS handshake.
    """
    anchors = pool.certificates
    if leaf in anchors:
        return leaf
    rest = list(intermediates)
    current = leaf
    for _ in range(_MAX_CHAIN):
        for ca in anchors:
            if _issued_by(current, ca):
                return ca
        step = next((c for c in rest if _issued_by(current, c)), None)
        if step is None:
            return None
        rest.remove(step)
        current = step
    return None


def chains_to(cert: Certificate, pool: CertPool) -> bool:
    """Whether ``cert`` (with its own intermediates) chains to a CA in ``pool``."""
    return anchor_of(cert.leaf, cert.chain[1:], pool) is not None


# ---------------------------------------------------------------------------
# the whole change


def check_change(
    old_cert: Certificate,
    old_pools: dict[str, CertPool | None],
    new_cert: Certificate,
    new_pools: dict[str, CertPool | None],
    node_names: Iterable[str] = (),
    now: datetime | None = None,
) -> None:
    """Raise :class:`CertValidationError` if the change would take away what works now.

    ``*_pools``: ``{"client CAs": pool, "root CAs": pool}`` (None: system
    store, not checked). ``node_names``: the nodes this manager serves (the
    names the certificate must keep carrying).
    """
    cert_changed = new_cert is not old_cert
    if cert_changed:
        check_usable(new_cert, now)
        _check_usages(old_cert, new_cert)
        _check_node_names(old_cert, new_cert, frozenset(node_names))
    for what, new_pool in new_pools.items():
        old_pool = old_pools.get(what)
        if new_pool is None or old_pool is None:
            continue
        if new_pool is old_pool and not cert_changed:
            continue
        if not chains_to(old_cert, old_pool) or chains_to(new_cert, new_pool):
            continue
        if cert_changed:
            raise CertValidationError(
                "chain",
                f"the new certificate ({new_cert.subject}, issued by "
                f"{new_cert.leaf.issuer.rfc4514_string()}) does not chain to the {what} pool "
                f"({len(new_pool)} CA)",
                f"add its issuing CA to the {what} first (overlap), or issue it from a CA "
                "the pool holds",
            )
        raise CertValidationError(
            "trust",
            f"the new {what} pool ({len(new_pool)} CA) no longer holds the CA that signs our "
            f"own certificate ({old_cert.leaf.issuer.rfc4514_string()}); a truncated or "
            "incomplete bundle?",
            "keep that CA in the bundle until our certificate is re-issued from a CA the new "
            "bundle holds (update the certificate first)",
        )


def _check_usages(old: Certificate, new: Certificate) -> None:
    lost = usages(old.leaf) - usages(new.leaf)
    if lost:
        raise CertValidationError(
            "usage",
            f"the new certificate lacks the extended key usage {', '.join(sorted(lost))} "
            "that the current one has (a node certificate needs serverAuth and clientAuth)",
            "issue it with both serverAuth and clientAuth usages",
        )


def _check_node_names(old: Certificate, new: Certificate, served: frozenset[str]) -> None:
    carried = set(old.node_names)
    required = carried & served if served else carried
    missing = sorted(required - set(new.node_names))
    if missing:
        has = ", ".join(new.node_names) or "no node name"
        raise CertValidationError(
            "node_name",
            f"the new certificate is for {has}, not for {', '.join(missing)} "
            "(URI SAN ergo://NAME@HOST)",
            f"issue it for {missing[0]}",
        )


# ---------------------------------------------------------------------------
# the in-memory handshake


def handshake_in_memory(probe: Probe, max_rounds: int = 16) -> str | None:
    """Run one TLS handshake between ``probe``'s contexts in memory; None if it succeeds.

    Otherwise the reason (the first side's error). Sans-IO: the two
    ``SSLObject`` exchange bytes through memory BIOs, bounded in rounds.
    After the handshake each side reads once, so that a client certificate
    refused under TLS 1.3 (reported after the client's handshake completes)
    is seen.
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = probe.client.wrap_bio(
        c_in, c_out, server_side=False, server_hostname=probe.server_name
    )
    server = probe.server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}

    def exchange(
        step: Callable[[str, ssl.SSLObject], object],
        sides: tuple[tuple[str, ssl.SSLObject], ...],
        not_yet: tuple[type[ssl.SSLError], ...],
    ) -> str | None:
        """``step`` on each side (a ``not_yet`` error: it waits for bytes), then
        carry the bytes across; the first side's error, if any."""
        for side, obj in sides:
            try:
                step(side, obj)
            except not_yet:
                pass
            except ssl.SSLError as exc:
                return f"{side}: {exc.reason or exc}"
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        return None

    def handshake(side: str, obj: ssl.SSLObject) -> None:
        if not done[side]:
            obj.do_handshake()
            done[side] = True

    for _ in range(max_rounds):
        sides = (("client", client), ("server", server))
        if error := exchange(handshake, sides, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
            return error
        if all(done.values()) and not c_out.pending and not s_out.pending:
            break
    if not all(done.values()):
        return "the handshake did not finish"
    # Post-handshake messages (TLS 1.3 tickets, a deferred client-cert alert).
    for _ in range(2):
        sides = (("server", server), ("client", client))
        read = (ssl.SSLWantReadError, ssl.SSLZeroReturnError)
        if error := exchange(lambda _side, obj: obj.read(1), sides, read):
            return error
    return None


def check_handshake(new: Probe, old: Callable[[], Probe] | None) -> None:
    """The in-memory handshake of ``new`` must succeed if ``old()``'s did.

    ``old`` is called only when the new one fails (building it may cost a
    context or two).
    """
    why = handshake_in_memory(new)
    if why is None:
        return
    if old is not None and handshake_in_memory(old()) is not None:
        return  # did not work before either: nothing is taken away
    raise CertValidationError(
        "handshake",
        f"a TLS handshake with the new material fails in memory ({why})",
        "make the certificate chain to the CA pools and carry the usages the pools' peers check",
    )
