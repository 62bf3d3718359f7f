"""Development certificates and Go-style key-pair loading.

``generate_self_signed_cert`` fixes the flaws of Ergo's helper: P-256 instead
of P-521, serverAuth *and* clientAuth usages (so it works for mutual TLS),
a PKCS#8 ``PRIVATE KEY`` PEM, and a NotBefore backdated for clock skew.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ergo_py.gen.cert import Certificate, Password
from ergo_py.gen.errors import CertificateError

__all__ = [
    "certificate_builder",
    "generate_self_signed_cert",
    "load_x509_key_pair",
    "san_entries",
]

BACKDATE = timedelta(minutes=1)
"""How far back a new certificate's validity starts, for clock skew."""
_SELF_SIGNED_VALIDITY = timedelta(days=365)


def san_entries(hosts: tuple[str, ...] | list[str]) -> list[x509.GeneralName]:
    """An IP SAN for each host that parses as an address, else a DNS SAN (no duplicates)."""
    out: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise CertificateError(f"host must be a non-empty str, got {host!r}")
        entry: x509.GeneralName
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in out:
            out.append(entry)
    return out


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    not_before: datetime,
    not_after: datetime,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    issuer_key: CertificatePublicKeyTypes | None = None,
) -> x509.CertificateBuilder:
    """What every certificate made here has, ready to sign (ECDSA P-256 keys).

    Names, key, a random serial, the validity, basic constraints and key
    usage (a CA signs certificates; a leaf has serverAuth and clientAuth),
    the ``sans`` if any, and the key identifiers: the authority's is that of
    ``issuer_key``, or of ``public_key`` itself when self-signed.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    authority = x509.SubjectKeyIdentifier.from_public_key(issuer_key or public_key)
    return builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(authority), critical=False
    )


def generate_self_signed_cert(org: str, *hosts: str) -> Certificate:
    """A self-signed development certificate for ``hosts`` (ECDSA P-256, 365 days).

    Usable as both server and client certificate; trust it by pinning (put
    the certificate itself into a CertPool) or dial with insecure_skip_verify.
    """
    if not isinstance(org, str) or not org:
        raise CertificateError("organisation must be a non-empty str")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    now = datetime.now(UTC)
    builder = certificate_builder(
        name,
        name,
        key.public_key(),
        now - BACKDATE,
        now + _SELF_SIGNED_VALIDITY,
        sans=san_entries(list(hosts)),
    )
    return Certificate((builder.sign(key, hashes.SHA256()),), key)


def load_x509_key_pair(
    cert_file: str | Path, key_file: str | Path, password: Password = None
) -> Certificate:
    """Load a chain PEM file and its key PEM file (Go's ``tls.LoadX509KeyPair``).

    Accepts encrypted keys (with ``password``) and Ergo's SEC1 EC keys
    mislabelled ``RSA PRIVATE KEY``. CertificateError on any problem.
    """
    try:
        cert_pem = Path(cert_file).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read certificate file {cert_file}: {exc}") from exc
    try:
        key_pem = Path(key_file).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read key file {key_file}: {exc}") from exc
    return Certificate.from_pem(cert_pem, key_pem, password)
