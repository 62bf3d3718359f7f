"""A small certificate authority for development and tests.

It issues node certificates that bind a node name by URI SAN
(``ergo://name@host``), with both TLS usages, so nodes can run mutual TLS and
check each other's identity. Not for production key management.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ergo_py.gen.cert import (
    NODE_URI_SCHEME,
    Certificate,
    CertPool,
    Password,
    PrivateKey,
    load_pem_chain,
    load_pem_private_key,
)
from ergo_py.gen.errors import CertificateError, ErrIncorrect
from ergo_py.lib.cert import BACKDATE, certificate_builder, san_entries

__all__ = ["CertificateAuthority"]

_CA_VALIDITY = timedelta(days=3650)
_NODE_VALIDITY = timedelta(days=90)


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ergo_py"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class CertificateAuthority:
    """A CA certificate and its key; issues node certificates.

    Thread-safe: issuing only reads the CA's immutable key and certificate.
    """

    __slots__ = ("_cert", "_key")

    def __init__(self, certificate: x509.Certificate, private_key: PrivateKey) -> None:
        # Reuses Certificate's key check; the CA is then kept as plain parts.
        Certificate((certificate,), private_key)
        try:
            bc = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, ValueError):
            bc = None
        if bc is None or not bc.ca:
            raise CertificateError("not a CA certificate (basicConstraints CA:TRUE missing)")
        self._cert = certificate
        self._key = private_key

    @classmethod
    def create(cls, name: str, valid_for: timedelta = _CA_VALIDITY) -> CertificateAuthority:
        """A fresh self-signed CA (ECDSA P-256) called ``name``."""
        if not isinstance(name, str) or not name:
            raise ErrIncorrect("CA name must be a non-empty str")
        _check_validity(valid_for)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _subject(name)
        now = datetime.now(UTC)
        builder = certificate_builder(
            subject, subject, key.public_key(), now - BACKDATE, now + valid_for, ca=True
        )
        cert = builder.sign(key, hashes.SHA256())
        return cls(cert, key)

    @classmethod
    def from_pem(
        cls, cert_pem: bytes | str, key_pem: bytes | str, password: Password = None
    ) -> CertificateAuthority:
        """Load a CA saved with :meth:`to_pem` (CertificateError if unusable)."""
        chain = load_pem_chain(cert_pem)
        return cls(chain[0], load_pem_private_key(key_pem, password))

    def to_pem(self) -> tuple[bytes, bytes]:
        """(CA certificate PEM, unencrypted PKCS#8 key PEM)."""
        return Certificate((self._cert,), self._key).to_pem()

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def name(self) -> str:
        return self._cert.subject.rfc4514_string()

    def pool(self) -> CertPool:
        """A new CertPool holding this CA's certificate."""
        return CertPool((self._cert,))

    def issue(
        self,
        node_name: str,
        hosts: tuple[str, ...] | list[str] = (),
        valid_for: timedelta = _NODE_VALIDITY,
        not_before: datetime | None = None,
    ) -> Certificate:
        """A node certificate for ``node_name`` (``name@host``), ECDSA P-256.

        SANs: ``ergo://name@host``, then DNS/IP names for ``hosts`` and the
        node's host part. Usages serverAuth and clientAuth. Validity: from a
        minute ago to ``valid_for`` from now; with ``not_before``, from
        ``not_before`` for ``valid_for`` (which can yield expired or
        not-yet-valid certificates, on purpose, for tests).
        """
        if not isinstance(node_name, str):
            raise ErrIncorrect("node name must be a str")
        name, sep, host = node_name.partition("@")
        if not sep or not name or not host or "@" in host or "/" in node_name:
            raise ErrIncorrect(f"node name must look like name@host, got {node_name!r}")
        _check_validity(valid_for)
        now = datetime.now(UTC)
        if not_before is None:
            start, end = now - BACKDATE, now + valid_for
        else:
            if not_before.tzinfo is None:
                raise ErrIncorrect("not_before must be timezone-aware")
            start, end = not_before, not_before + valid_for
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(NODE_URI_SCHEME + node_name)]
        sans += san_entries([*hosts, host])
        builder = certificate_builder(
            _subject(node_name),
            self._cert.subject,
            key.public_key(),
            start,
            end,
            sans=sans,
            issuer_key=self._cert.public_key(),
        )
        cert = builder.sign(self._key, hashes.SHA256())
        return Certificate((cert,), key)

    def renewer(
        self,
        node_name: str,
        hosts: tuple[str, ...] | list[str] = (),
        valid_for: timedelta = _NODE_VALIDITY,
    ) -> Callable[[], Certificate]:
        """A renew function for ``manager.set_renew``: each call issues a fresh certificate.

        Valid from a second ago (not the usual minute), so a short-lived
        development certificate renews at the asked fraction of its own lifetime.
        """
        self.issue(node_name, hosts, valid_for)  # bad arguments fail here, not on the renew thread

        def renew() -> Certificate:
            start = datetime.now(UTC) - timedelta(seconds=1)
            return self.issue(node_name, hosts, valid_for, not_before=start)

        return renew

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.name!r})"


def _check_validity(valid_for: timedelta) -> None:
    if not isinstance(valid_for, timedelta) or valid_for <= timedelta(0):
        raise ErrIncorrect(f"valid_for must be a positive timedelta, got {valid_for!r}")
