"""Certificates, CA pools and client-auth modes (Ergo's ``tls.Certificate`` world).

A :class:`Certificate` is an immutable leaf-first chain plus the private key
that matches the leaf; it cannot be built with a key that does not match. A
:class:`PeerCertificate` is the parsed view of a certificate a peer presented
(no key). Node names come from URI SANs of the form ``ergo://NAME@HOST``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from ergo_py.gen.errors import CertificateError, ErrNotAllowed

__all__ = [
    "NODE_URI_SCHEME",
    "CertPool",
    "Certificate",
    "ClientAuth",
    "PeerCertificate",
    "PrivateKey",
]

NODE_URI_SCHEME = "ergo://"
"""Prefix of the URI SAN that binds a certificate to a node name."""

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)
"""Private key types a :class:`Certificate` accepts (those TLS can use)."""

_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)

Password = bytes | str | None


class ClientAuth(enum.IntEnum):
    """Go's ``tls.ClientAuthType``: what a listener asks of a dialer's certificate.

    Values match Go's. ``REQUEST_CLIENT_CERT`` and ``REQUIRE_ANY_CLIENT_CERT``
    (ask for a certificate without verifying it) have no standard-library
    equivalent; ``CertAuthManager.set_client_auth`` refuses them.
    """

    NO_CLIENT_CERT = 0
    REQUEST_CLIENT_CERT = 1
    REQUIRE_ANY_CLIENT_CERT = 2
    VERIFY_CLIENT_CERT_IF_GIVEN = 3
    REQUIRE_AND_VERIFY_CLIENT_CERT = 4


# ---------------------------------------------------------------------------
# parsing helpers


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def parse_node_uri(uri: str) -> str | None:
    """The node name in an ``ergo://NAME@HOST`` URI, or None if it is not one."""
    if uri[: len(NODE_URI_SCHEME)].lower() != NODE_URI_SCHEME:
        return None
    rest = uri[len(NODE_URI_SCHEME) :].rstrip("/")
    name, sep, host = rest.partition("@")
    if not sep or not name or not host or "@" in host or "/" in rest:
        return None
    return rest


@dataclass(frozen=True, slots=True)
class _Sans:
    node_names: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]


def _sans(cert: x509.Certificate) -> _Sans:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return _Sans((), (), ())
    except ValueError as exc:
        raise CertificateError(f"malformed certificate extensions: {exc}") from exc
    san = ext.value
    nodes: list[str] = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        node = parse_node_uri(uri)
        if node is not None and node not in nodes:
            nodes.append(node)
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return _Sans(tuple(nodes), dns, ips)


def _as_bytes(data: bytes | str, what: str) -> bytes:
    if isinstance(data, str):
        return data.encode("ascii", "replace")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise CertificateError(f"{what} must be bytes or str, got {type(data).__name__}")


def load_pem_chain(data: bytes | str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle, in order; CertificateError if none or malformed."""
    raw = _as_bytes(data, "certificate PEM")
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise CertificateError(f"no valid PEM certificate: {exc}") from exc
    if not certs:
        raise CertificateError("no PEM certificate found")
    # The parser skips a block without its END line: a bundle cut short (a
    # file caught half-written, a truncated copy) would lose its last CA quietly.
    begun = raw.count(b"-----BEGIN CERTIFICATE-----")
    if begun != len(certs):
        raise CertificateError(
            f"truncated PEM: {begun} certificate block(s) begin but {len(certs)} are complete"
        )
    return tuple(certs)


_MISLABELLED_RSA = re.compile(
    rb"-----BEGIN RSA PRIVATE KEY-----(?P<body>[A-Za-z0-9+/=\s]+)-----END RSA PRIVATE KEY-----"
)


def load_pem_private_key(data: bytes | str, password: Password = None) -> PrivateKey:
    """A private key from PEM (PKCS#8, traditional, SEC1, encrypted or not).

    Also accepts Ergo's SEC1 EC keys labelled ``RSA PRIVATE KEY``: when the
    labelled parse fails, the armour is stripped and the DER loaded as is.
    """
    raw = _as_bytes(data, "key PEM")
    pw = password.encode() if isinstance(password, str) else password
    if pw is not None and not isinstance(pw, bytes):
        raise CertificateError("password must be bytes, str or None")
    try:
        key: Any = serialization.load_pem_private_key(raw, password=pw)
    except TypeError as exc:
        # encrypted without a password, or a password for a plain key
        raise CertificateError(f"cannot load private key: {exc}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        key = _load_mislabelled(raw, pw)
        if key is None:
            raise CertificateError(f"cannot load private key: {exc}") from exc
    if not isinstance(key, _KEY_TYPES):
        raise CertificateError(f"unsupported private key type {type(key).__name__}")
    return key


def _load_mislabelled(raw: bytes, password: bytes | None) -> Any:
    m = _MISLABELLED_RSA.search(raw)
    if m is None or b"Proc-Type" in raw:
        return None
    try:
        der = base64.b64decode(b"".join(m.group("body").split()), validate=True)
        return serialization.load_der_private_key(der, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error):
        return None


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# ---------------------------------------------------------------------------
# Certificate


class Certificate:
    """An immutable chain (leaf first) and the private key matching the leaf.

    Construction checks that the key matches the leaf's public key
    (:class:`CertificateError` otherwise); it does not check validity dates,
    which ``CertManager.update`` does. Equal when chain and key are equal.
    """

    __slots__ = ("_chain", "_fingerprint", "_key", "_sans")

    _chain: tuple[x509.Certificate, ...]
    _key: PrivateKey
    _fingerprint: str
    _sans: _Sans

    def __init__(self, chain: Sequence[x509.Certificate], private_key: PrivateKey) -> None:
        if isinstance(chain, x509.Certificate):
            chain = (chain,)
        try:
            items = tuple(chain)
        except TypeError as exc:
            raise CertificateError("chain must be a sequence of x509.Certificate") from exc
        if not items:
            raise CertificateError("empty certificate chain")
        for c in items:
            if not isinstance(c, x509.Certificate):
                raise CertificateError(f"chain element is {type(c).__name__}, not x509.Certificate")
        if not isinstance(private_key, _KEY_TYPES):
            raise CertificateError(f"unsupported private key type {type(private_key).__name__}")
        try:
            leaf_pub = _public_der(items[0].public_key())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CertificateError(f"cannot read the leaf public key: {exc}") from exc
        if _public_der(private_key.public_key()) != leaf_pub:
            raise CertificateError("private key does not match the certificate's public key")
        object.__setattr__(self, "_chain", items)
        object.__setattr__(self, "_key", private_key)
        object.__setattr__(self, "_fingerprint", _fingerprint(items[0]))
        object.__setattr__(self, "_sans", _sans(items[0]))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Certificate is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Certificate is immutable")

    def __copy__(self) -> Certificate:
        return self  # immutable: a copy is the same value

    def __deepcopy__(self, memo: dict[int, Any]) -> Certificate:
        return self

    @classmethod
    def from_pem(
        cls, cert_pem: bytes | str, key_pem: bytes | str, password: Password = None
    ) -> Certificate:
        """Chain PEM (leaf first) and key PEM (encrypted if ``password`` is given)."""
        return cls(load_pem_chain(cert_pem), load_pem_private_key(key_pem, password))

    def to_pem(self) -> tuple[bytes, bytes]:
        """(chain PEM, unencrypted PKCS#8 key PEM). Keep the key out of logs and disks."""
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self._chain)
        key = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return chain, key

    @property
    def leaf(self) -> x509.Certificate:
        return self._chain[0]

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self._chain

    @property
    def private_key(self) -> PrivateKey:
        return self._key

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex of the leaf DER."""
        return self._fingerprint

    @property
    def subject(self) -> str:
        return self.leaf.subject.rfc4514_string()

    @property
    def not_before(self) -> datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    @property
    def node_names(self) -> tuple[str, ...]:
        """Node names (``name@host``) from ``ergo://NAME@HOST`` URI SANs."""
        return self._sans.node_names

    @property
    def dns_names(self) -> tuple[str, ...]:
        return self._sans.dns_names

    @property
    def ip_addresses(self) -> tuple[str, ...]:
        return self._sans.ip_addresses

    def is_valid_at(self, when: datetime | None = None) -> bool:
        """Whether ``when`` (default now, UTC) lies within the leaf's validity."""
        now = when or datetime.now(UTC)
        return self.not_before <= now <= self.not_after

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Certificate):
            return NotImplemented
        return self._chain == other._chain and _public_der(self._key.public_key()) == _public_der(
            other._key.public_key()
        )

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        return (
            f"Certificate(subject={self.subject!r}, fingerprint={self._fingerprint[:16]}..., "
            f"not_after={self.not_after.isoformat()})"
        )


# ---------------------------------------------------------------------------
# PeerCertificate


_PARSED_PEERS_MAX = 256
_parsed_peers: dict[bytes, PeerCertificate] = {}


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What a peer presented: a parsed leaf certificate without a key."""

    der: bytes
    fingerprint: str
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    node_names: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        """Parse a DER certificate (``getpeercert(binary_form=True)``).

        Every link of every connection from a peer presents the same
        certificate until it rotates: parsed ones are remembered (bounded).
        """
        if not isinstance(der, bytes | bytearray | memoryview) or not der:
            raise CertificateError("peer certificate must be non-empty DER bytes")
        der = bytes(der)
        known = _parsed_peers.get(der)
        if known is not None:
            return known
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CertificateError(f"malformed peer certificate: {exc}") from exc
        parsed = cls.from_x509(cert)
        if len(_parsed_peers) >= _PARSED_PEERS_MAX:
            _parsed_peers.clear()
        _parsed_peers[der] = parsed
        return parsed

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> PeerCertificate:
        sans = _sans(cert)
        try:
            subject = cert.subject.rfc4514_string()
            issuer = cert.issuer.rfc4514_string()
        except ValueError as exc:
            raise CertificateError(f"malformed peer certificate name: {exc}") from exc
        return cls(
            der=cert.public_bytes(serialization.Encoding.DER),
            fingerprint=_fingerprint(cert),
            subject=subject,
            issuer=issuer,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            node_names=sans.node_names,
            dns_names=sans.dns_names,
            ip_addresses=sans.ip_addresses,
        )

    def has_node_name(self, name: str) -> bool:
        """Whether the certificate binds ``name`` (``name@host``) by URI SAN."""
        return name in self.node_names

    def __repr__(self) -> str:
        return (
            f"PeerCertificate(subject={self.subject!r}, "
            f"fingerprint={self.fingerprint[:16]}..., node_names={self.node_names!r})"
        )


# ---------------------------------------------------------------------------
# CertPool


class CertPool:
    """A set of trusted CA certificates (Go's ``x509.CertPool``).

    Adding is thread-safe; duplicates (same DER) are ignored. A manager keeps
    its own read-only copy, so changing a pool after handing it to a setter
    changes nothing until it is handed over again.
    """

    __slots__ = ("_certs", "_lock", "_readonly")

    def __init__(self, certificates: Iterable[x509.Certificate] = ()) -> None:
        self._lock = threading.Lock()
        self._certs: dict[str, x509.Certificate] = {}
        self._readonly = False
        for c in certificates:
            self.add(c)

    def add(self, cert: x509.Certificate) -> None:
        if self._readonly:
            raise ErrNotAllowed("this CertPool is a read-only snapshot; use copy()")
        if not isinstance(cert, x509.Certificate):
            raise CertificateError(f"CertPool.add needs an x509.Certificate, not {type(cert)}")
        fp = _fingerprint(cert)
        with self._lock:
            self._certs.setdefault(fp, cert)

    @classmethod
    def from_pem(cls, data: bytes | str) -> CertPool:
        return cls(load_pem_chain(data))

    @classmethod
    def from_file(cls, path: str | Path) -> CertPool:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read CA file {path}: {exc}") from exc
        return cls.from_pem(data)

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        with self._lock:
            return tuple(self._certs.values())

    @property
    def fingerprints(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._certs)

    def to_pem(self) -> str:
        """The pool as one PEM bundle (``cadata`` for ``load_verify_locations``)."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.certificates
        )

    def copy(self) -> CertPool:
        """A mutable copy."""
        return CertPool(self.certificates)

    def frozen(self) -> CertPool:
        """A read-only copy (``add`` raises ErrNotAllowed); self if already read-only."""
        if self._readonly:
            return self
        pool = CertPool(self.certificates)
        pool._readonly = True
        return pool

    @property
    def readonly(self) -> bool:
        return self._readonly

    def __len__(self) -> int:
        with self._lock:
            return len(self._certs)

    def __iter__(self) -> Iterator[x509.Certificate]:
        return iter(self.certificates)

    def __contains__(self, cert: object) -> bool:
        if not isinstance(cert, x509.Certificate):
            return False
        with self._lock:
            return _fingerprint(cert) in self._certs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CertPool):
            return NotImplemented
        return set(self.fingerprints) == set(other.fingerprints)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CertPool({len(self)} certificates)"
