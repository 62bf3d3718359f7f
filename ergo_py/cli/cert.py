"""``ergo-py cert``: make, issue and inspect certificates.

Key files are written with mode 0600 and never overwritten silently. They are
the user's explicit output; the node itself never writes keys to disk. For
keys that matter, write them to memory-backed storage (``/dev/shm``, a
tmpfs) or let a secrets tool do it: a private key on a persistent disk
outlives the certificate.

Our own development CA (:class:`ergo_py.lib.CertificateAuthority`) rather
than ``trustme``: node certificates must carry the node's name as an
``ergo://name@host`` URI SAN, which ``trustme`` cannot issue.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import click
from cryptography import x509

from ergo_py.cli.checks import rel
from ergo_py.cli.config import NodeConfig, load_config
from ergo_py.gen.cert import Certificate, load_pem_chain
from ergo_py.gen.errors import CertificateError
from ergo_py.lib import CertificateAuthority, generate_self_signed_cert, load_x509_key_pair

__all__ = ["describe", "group"]

_FORCE = click.option("--force", is_flag=True, help="Overwrite existing files.")


def _write(path: Path, data: bytes, secret: bool, force: bool) -> None:
    if path.exists() and not force:
        raise CertificateError(f"{rel(path)} exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _save(cert: Certificate, cert_file: Path, key_file: Path, force: bool) -> None:
    cert_pem, key_pem = cert.to_pem()
    if not force:
        for p in (cert_file, key_file):
            if p.exists():
                raise CertificateError(f"{rel(p)} exists (use --force to overwrite)")
    _write(cert_file, cert_pem, False, force)
    _write(key_file, key_pem, True, force)
    click.echo(f"wrote {rel(cert_file)} and {rel(key_file)} ({cert.fingerprint[:16]}...)")


def _prefix_files(prefix: str) -> tuple[Path, Path]:
    return Path(f"{prefix}.pem"), Path(f"{prefix}-key.pem")


@click.group("cert")
def group() -> None:
    """Make, issue and inspect certificates."""


@group.command("self-signed")
@click.option("--org", default="ergo_py", show_default=True, help="Organization in the subject.")
@click.option(
    "--host",
    multiple=True,
    help="DNS name or IP the certificate is for (repeatable).  [default: localhost, 127.0.0.1]",
)
@click.option(
    "--out", required=True, help="Path prefix: writes PREFIX.pem and PREFIX-key.pem (mode 0600)."
)
@_FORCE
def self_signed(org: str, host: tuple[str, ...], out: str, force: bool) -> None:
    """A self-signed development certificate (no node name: for meta servers and tests)."""
    cert = generate_self_signed_cert(org, *(host or ("localhost", "127.0.0.1")))
    _save(cert, *_prefix_files(out), force)


@group.command("ca-init")
@click.option("--name", default="ergo_py dev CA", show_default=True, help="The CA's common name.")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=3650,
    show_default=True,
    help="How long the CA is valid.",
)
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False),
    help="Writes ca.pem and ca-key.pem (mode 0600) here.",
)
@_FORCE
def ca_init(name: str, days: int, directory: str, force: bool) -> None:
    """Create a development CA."""
    ca = CertificateAuthority.create(name, valid_for=timedelta(days=days))
    cert_pem, key_pem = ca.to_pem()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _write(d / "ca.pem", cert_pem, False, force)
    _write(d / "ca-key.pem", key_pem, True, force)
    click.echo(f"wrote {rel(d / 'ca.pem')} and {rel(d / 'ca-key.pem')}")


def _from_config(
    config: NodeConfig, node: str | None, for_inspect: bool
) -> tuple[str, Path, Path, Path | None]:
    """Node name, cert and key files and CA dir that ``config`` names."""
    host = config.name.partition("@")[2]
    ca_file = config.tls.root_cas or config.tls.client_cas if config.tls else None
    ca_dir = ca_file.parent if ca_file is not None else None
    if for_inspect:
        if config.inspect_cert is None or config.inspect_key is None:
            raise CertificateError(
                f"{config.path}: [inspect] names no cert and key files: add cert = ... and "
                "key = ... there"
            )
        return node or f"inspect@{host}", config.inspect_cert, config.inspect_key, ca_dir
    if config.tls is None:
        raise CertificateError(f"{config.path}: no [tls] table: this node runs on plain TCP")
    return node or config.name, config.tls.cert, config.tls.key, ca_dir


@group.command("issue")
@click.argument("node", required=False)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="Issue the certificate a node config names: for its node, to its [tls] cert and "
    "key files (paths relative to the config file), from the CA directory of tls.root_cas.",
)
@click.option(
    "--inspect",
    "for_inspect",
    is_flag=True,
    help="With --config: the command line's client certificate (inspect@HOST) for the "
    "[inspect] cert and key files instead.",
)
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False),
    help="Directory with ca.pem and ca-key.pem (from ca-init).  [default with --config: "
    "the directory of tls.root_cas]",
)
@click.option("--host", multiple=True, help="Extra DNS name or IP (repeatable).")
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=90.0,
    show_default=True,
    help="How long the certificate is valid.",
)
@click.option(
    "--out", help="Path prefix: writes PREFIX.pem and PREFIX-key.pem.  [default with --config]"
)
@_FORCE
def issue(
    node: str | None,
    config: str | None,
    for_inspect: bool,
    ca_dir: str | None,
    host: tuple[str, ...],
    days: float,
    out: str | None,
    force: bool,
) -> None:
    """Issue a certificate for NODE (name@host) from a CA made by ca-init."""
    cert_file = key_file = None
    default_ca: Path | None = None
    if config is not None:
        node, cert_file, key_file, default_ca = _from_config(load_config(config), node, for_inspect)
    elif for_inspect:
        raise click.UsageError("--inspect needs --config")
    if node is None:
        raise click.UsageError("give NODE (name@host) or --config")
    if out is not None:
        cert_file, key_file = _prefix_files(out)
    if cert_file is None or key_file is None:
        raise click.UsageError("give --out PREFIX (or --config)")
    d = Path(ca_dir) if ca_dir is not None else default_ca
    if d is None:
        raise click.UsageError("give --ca-dir (the directory ca-init wrote)")
    try:
        ca = CertificateAuthority.from_pem(
            (d / "ca.pem").read_bytes(), (d / "ca-key.pem").read_bytes()
        )
    except OSError as exc:
        raise CertificateError(
            f"cannot read the CA in {rel(d)} ({exc.strerror}): make one with "
            f"ergo-py cert ca-init --dir {rel(d)}"
        ) from None
    cert = ca.issue(node, hosts=host, valid_for=timedelta(days=days))
    _save(cert, cert_file, key_file, force)


def _when(leaf: x509.Certificate) -> str:
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    return f"{leaf.not_valid_before_utc:{fmt}} .. {leaf.not_valid_after_utc:{fmt}}"


def describe(cert: Certificate) -> list[str]:
    """Human-readable lines about a certificate (key included or not: same lines)."""
    return _lines(cert.leaf)


def _lines(leaf: x509.Certificate) -> list[str]:
    from ergo_py.gen.cert import PeerCertificate

    info = PeerCertificate.from_x509(leaf)
    try:
        ca = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    hosts = (*info.dns_names, *info.ip_addresses)
    return [
        f"subject:     {leaf.subject.rfc4514_string()}",
        f"issuer:      {leaf.issuer.rfc4514_string()}"
        + ("  (self-signed)" if leaf.issuer == leaf.subject else ""),
        f"kind:        {'CA' if ca else 'leaf'}",
        f"fingerprint: {info.fingerprint}",
        f"valid:       {_when(leaf)}",
        f"node names:  {', '.join(info.node_names) or '-'}",
        f"hosts:       {', '.join(hosts) or '-'}",
    ]


@group.command("show")
@click.argument("cert_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", type=click.Path(dir_okay=False), help="Also check that this key matches.")
def show(cert_file: str, key: str | None) -> None:
    """Print a certificate's details (every certificate in the file)."""
    if key is not None:
        load_x509_key_pair(cert_file, key)
    chain = load_pem_chain(Path(cert_file).read_bytes())
    for i, leaf in enumerate(chain):
        if i:
            click.echo()
        click.echo("\n".join(_lines(leaf)))
    if key is not None:
        click.echo(f"key:         {key} matches")
