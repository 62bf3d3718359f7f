"""``ergo-py cert``: make, issue and inspect certificates.

Key files are written with mode 0600 and never overwritten silently. They are
the user's explicit output; the node itself never writes keys to disk.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from ergo_py.gen.cert import Certificate
from ergo_py.gen.errors import CertificateError
from ergo_py.lib import CertificateAuthority, generate_self_signed_cert, load_x509_key_pair


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cert", help="make, issue and inspect certificates")
    csub = p.add_subparsers(dest="cert_command", required=True)

    s = csub.add_parser("self-signed", help="a self-signed development certificate")
    s.add_argument("--org", default="ergo_py")
    s.add_argument("--host", action="append", default=[], help="DNS name or IP (repeatable)")
    s.add_argument("--out", required=True, help="path prefix: writes PREFIX.pem, PREFIX-key.pem")
    s.add_argument("--force", action="store_true", help="overwrite existing files")
    s.set_defaults(run=_self_signed)

    c = csub.add_parser("ca-init", help="create a development CA")
    c.add_argument("--name", default="ergo_py dev CA")
    c.add_argument("--days", type=int, default=3650)
    c.add_argument("--dir", required=True, help="writes ca.pem and ca-key.pem here")
    c.add_argument("--force", action="store_true")
    c.set_defaults(run=_ca_init)

    i = csub.add_parser("issue", help="issue a node certificate from a CA made by ca-init")
    i.add_argument("node", help="node name, e.g. a@localhost")
    i.add_argument("--ca-dir", required=True)
    i.add_argument("--host", action="append", default=[], help="extra DNS name or IP")
    i.add_argument("--days", type=float, default=90.0)
    i.add_argument("--out", required=True, help="path prefix: writes PREFIX.pem, PREFIX-key.pem")
    i.add_argument("--force", action="store_true")
    i.set_defaults(run=_issue)

    w = csub.add_parser("show", help="print a certificate's details")
    w.add_argument("cert_file")
    w.add_argument("--key", help="also check that this key matches")
    w.set_defaults(run=_show)


def _write(path: Path, data: bytes, secret: bool, force: bool) -> None:
    if path.exists() and not force:
        raise CertificateError(f"{path} exists (use --force to overwrite)")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _save(cert: Certificate, prefix: str, force: bool) -> None:
    cert_pem, key_pem = cert.to_pem()
    _write(Path(f"{prefix}.pem"), cert_pem, False, force)
    _write(Path(f"{prefix}-key.pem"), key_pem, True, force)
    print(f"wrote {prefix}.pem and {prefix}-key.pem ({cert.fingerprint[:16]}...)")


def _self_signed(args: argparse.Namespace) -> int:
    cert = generate_self_signed_cert(args.org, *(args.host or ["localhost", "127.0.0.1"]))
    _save(cert, args.out, args.force)
    return 0


def _ca_init(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.create(args.name, valid_for=timedelta(days=args.days))
    cert_pem, key_pem = ca.to_pem()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    _write(d / "ca.pem", cert_pem, False, args.force)
    _write(d / "ca-key.pem", key_pem, True, args.force)
    print(f"wrote {d / 'ca.pem'} and {d / 'ca-key.pem'}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    d = Path(args.ca_dir)
    ca = CertificateAuthority.from_pem((d / "ca.pem").read_bytes(), (d / "ca-key.pem").read_bytes())
    cert = ca.issue(args.node, hosts=tuple(args.host), valid_for=timedelta(days=args.days))
    _save(cert, args.out, args.force)
    return 0


def describe(cert: Certificate) -> list[str]:
    """Human-readable lines about a certificate (also used by the demo)."""
    return [
        f"subject:     {cert.leaf.subject.rfc4514_string()}",
        f"issuer:      {cert.leaf.issuer.rfc4514_string()}",
        f"fingerprint: {cert.fingerprint}",
        f"valid:       {cert.not_before.isoformat()} .. {cert.not_after.isoformat()}",
        f"node names:  {', '.join(cert.node_names) or '-'}",
    ]


def _show(args: argparse.Namespace) -> int:
    if args.key:
        cert = load_x509_key_pair(args.cert_file, args.key)
        print("key:         matches")
    else:
        from cryptography import x509

        leaf = x509.load_pem_x509_certificate(Path(args.cert_file).read_bytes())
        print(f"subject:     {leaf.subject.rfc4514_string()}")
        print(f"issuer:      {leaf.issuer.rfc4514_string()}")
        print(f"valid:       {leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc}")
        return 0
    sys.stdout.write("\n".join(describe(cert)) + "\n")
    return 0
