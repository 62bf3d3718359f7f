"""``ergo-py node check``: will this config's files work, and if not, what to do.

Each check names the file, what was checked and the fix. The CA-chain check
runs a real TLS handshake in memory (``ssl`` with memory BIOs) between our
certificate and a client trusting the configured CA file: exactly what a
peer trusting that CA will do, with the verdict OpenSSL gives it.
"""

from __future__ import annotations

import shlex
import ssl
from dataclasses import dataclass
from pathlib import Path

from ergo_py import gen
from ergo_py.cli.config import NodeConfig
from ergo_py.gen.certmanager import build_server_context, create_cert_auth_manager
from ergo_py.lib import load_x509_key_pair

__all__ = ["Finding", "check_files", "handshake_verdict", "rel"]


@dataclass(frozen=True)
class Finding:
    """One failed check: the file, the check and the fix."""

    file: Path
    check: str
    problem: str
    fix: str
    blocks_start: bool = True  # False: the node can run (a peer CA need not be ours)

    def __str__(self) -> str:
        return f"{rel(self.file)}: {self.problem} (check: {self.check}). Fix: {self.fix}"


def rel(path: Path) -> str:
    """``path`` as the user would type it: relative below the current directory, else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _prefix(cert: Path) -> str:
    name = cert.name.removesuffix(".pem")
    return rel(cert.with_name(name))


def _issue_hint(name: str, cert: Path, ca: Path | None) -> str:
    ca_dir = rel(ca.parent) if ca is not None else "CA_DIR"
    return (
        f"ergo-py cert issue {name} --ca-dir {shlex.quote(ca_dir)} "
        f"--out {shlex.quote(_prefix(cert))}"
    )


def handshake_verdict(cert: gen.Certificate, ca_file: Path) -> str | None:
    """Why a peer trusting only ``ca_file`` would refuse ``cert`` (None: it accepts it)."""
    server = build_server_context(create_cert_auth_manager(cert).state())
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata=ca_file.read_text())
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_side=False)
    for _ in range(20):  # a TLS 1.3 handshake takes two round trips
        done = True
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLCertVerificationError as exc:
                return str(exc.verify_message or exc.reason)
            except ssl.SSLError as exc:
                if side is c:
                    return str(exc.reason or exc)
                done = False  # the server sees the client's alert; the client's verdict counts
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done:
            return None
    return "the handshake did not finish"


def check_files(config: NodeConfig) -> list[Finding]:
    """Every failed check on the files ``config`` names (empty: all good)."""
    found: list[Finding] = []
    tls = config.tls
    if tls is not None:
        found += _check_pair(config.name, tls.cert, tls.key, tls.root_cas or tls.client_cas)
        cas = {
            ca: key
            for key, ca in (("tls.client_cas", tls.client_cas), ("tls.root_cas", tls.root_cas))
            if ca is not None
        }
        for ca, key in cas.items():
            found += _check_ca(ca, key)
        if not found:
            cert = load_x509_key_pair(tls.cert, tls.key)
            for ca, key in cas.items():
                why = handshake_verdict(cert, ca)
                if why is not None:
                    found.append(
                        Finding(
                            tls.cert,
                            f"CA chain (against {key} = {rel(ca)})",
                            f"a peer trusting that CA refuses this certificate ({why})",
                            f"issue the certificate from that CA "
                            f"({_issue_hint(config.name, tls.cert, ca)}), or point {key} "
                            "at the CA that issued it",
                            blocks_start=False,
                        )
                    )
    if config.inspect_cert is not None and config.inspect_key is not None:
        root = tls.root_cas if tls is not None else None
        found += _check_pair(None, config.inspect_cert, config.inspect_key, root)
    return found


def _check_pair(name: str | None, cert: Path, key: Path, ca: Path | None) -> list[Finding]:
    """Files exist, key matches, certificate names ``name`` (when given)."""
    label = name or "inspect@HOST"
    missing = [p for p in (cert, key) if not p.is_file()]
    if missing:
        return [
            Finding(p, "file exists", "no such file", f"make it: {_issue_hint(label, cert, ca)}")
            for p in missing
        ]
    try:
        loaded = load_x509_key_pair(cert, key)
    except gen.CertificateError as exc:
        text = str(exc)
        if "does not match" in text:
            return [
                Finding(
                    key,
                    f"key matches {rel(cert)}",
                    text,
                    "give the key that was written with this certificate, or issue both "
                    f"again: {_issue_hint(label, cert, ca)} --force",
                )
            ]
        return [
            Finding(
                cert,
                "certificate and key load",
                text,
                f"rewrite both files: {_issue_hint(label, cert, ca)} --force",
            )
        ]
    if not loaded.is_valid_at():
        return [
            Finding(
                cert,
                "certificate is valid now",
                f"valid only {loaded.not_before:%Y-%m-%d %H:%M} .. "
                f"{loaded.not_after:%Y-%m-%d %H:%M} UTC",
                f"issue a new one: {_issue_hint(label, cert, ca)} --force",
            )
        ]
    if name is not None and name not in loaded.node_names:
        names = ", ".join(loaded.node_names) or "no node name"
        return [
            Finding(
                cert,
                f"certificate names the node {name}",
                f"it names {names}; peers would refuse this node's identity",
                f"issue one for {name}: {_issue_hint(name, cert, ca)} --force",
            )
        ]
    return []


def _check_ca(ca: Path, key: str) -> list[Finding]:
    if not ca.is_file():
        return [
            Finding(
                ca,
                f"file exists ({key})",
                "no such file",
                f"make a CA: ergo-py cert ca-init --dir {shlex.quote(rel(ca.parent))}, or point "
                f"{key} at the CA file you have",
            )
        ]
    try:
        pool = gen.CertPool.from_file(ca)
    except gen.ErgoError as exc:
        return [
            Finding(ca, f"CA file loads ({key})", str(exc), "give a PEM file of CA certificates")
        ]
    if not len(pool):
        return [Finding(ca, f"CA file loads ({key})", "no certificate in it", "give a PEM CA file")]
    return []
