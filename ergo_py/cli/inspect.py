"""``ergo-py inspect NODE``: a running node's connections and certificates.

Starts a short-lived hidden node (it dials out only: no acceptor, no
registration) with a client certificate, calls the target's inspection
process (registered by ``ergo-py node run``) over a fresh connection, prints
what it answered and stops. The fresh connection also shows which certificate
the target presents to new handshakes right now.

The client certificate must name the inspecting node (``ergo://NAME@HOST``):
a mutual-TLS node checks that dialers are who they claim to be. Issue one for
the purpose (``ergo-py cert issue inspect@HOST ...``); the inspecting node
takes its name from that certificate. Do not borrow another running node's
certificate: the target would take the inspector for that node and drop its
real connection to it (a certificate naming the target itself is refused).

Exit status: 0 answered, 1 the target could not be reached or did not answer,
2 bad arguments or files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from typing import Any

from ergo_py import gen
from ergo_py.cli.node import INSPECT_PROCESS, ConfigError, load_config, plain
from ergo_py.lib import load_x509_key_pair

__all__ = [
    "add_parser",
    "add_target_arguments",
    "ask",
    "format_report",
    "inspect_node",
    "start_inspecting_node",
]

DEFAULT_TIMEOUT = 5.0


class InspectFailed(gen.ErgoError):
    """The target could not be reached or did not answer (exit status 1)."""


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a running node's connections and certificates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=_run)


def add_target_arguments(p: Any) -> None:
    """The arguments that say which node to reach and how (``inspect``, ``observer``)."""
    p.add_argument("node", nargs="?", help="the node to inspect (default with --config: its own)")
    p.add_argument("--cookie", help="the cluster cookie (default with --config: the config's)")
    p.add_argument("--cert", help="client certificate PEM (names the inspecting node)")
    p.add_argument("--key", help="its private key PEM")
    p.add_argument("--ca", help="CA PEM that verifies the target's certificate")
    p.add_argument(
        "--config",
        help="a node config: cookie, CA (tls.root_cas), route (first acceptor) and the "
        "client certificate ([inspect] cert/key) come from it",
    )
    p.add_argument("--route", type=_host_port, help="HOST:PORT of the target (default: registrar)")
    p.add_argument("--registrar-port", type=int, help="where to resolve NODE (default 4499)")
    p.add_argument("--name", help="name of the inspecting node (default: from --cert)")
    p.add_argument(
        "--process", default=None, help=f"inspection process (default {INSPECT_PROCESS})"
    )
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds (default 5)")
    p.add_argument(
        "--insecure-skip-verify",
        action="store_true",
        help="do not verify the target's certificate (its fingerprint is still shown)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log the connection attempt")


class _Plan:
    """Everything needed to inspect, gathered from the arguments and the config."""

    def __init__(self, args: argparse.Namespace) -> None:
        config = load_config(args.config) if args.config else None
        self.target: str = args.node or (config.name if config else "")
        if not self.target:
            raise ConfigError("name the node to inspect (or give --config)")
        self.cookie: str = args.cookie or (config.cookie if config else "")
        if not self.cookie:
            raise ConfigError("--cookie is required (or give --config)")
        cert = args.cert or (config.inspect_cert if config else None)
        key = args.key or (config.inspect_key if config else None)
        if cert is None or key is None:
            raise ConfigError(
                "a client certificate is required: --cert and --key, or [inspect] cert/key "
                "in the config (the node's own certificate names the node, not the inspector)"
            )
        self.cert = load_x509_key_pair(cert, key)
        ca = args.ca or (config.tls.root_cas if config and config.tls else None)
        self.insecure = bool(args.insecure_skip_verify)
        if ca is None and not self.insecure:
            raise ConfigError("--ca is required to verify the target (or --insecure-skip-verify)")
        self.pool = gen.CertPool.from_file(ca) if ca is not None else None
        self.route: tuple[str, int] | None = args.route
        if config and config.acceptors and self.route is None and self.target == config.name:
            acc = config.acceptors[0]
            host = acc.host if acc.host not in ("", "0.0.0.0", "::") else _host_of(config.name)
            self.route = (host, acc.port)
        self.registrar_port: int = args.registrar_port or (
            config.registrar_port if config else gen.NetworkOptions.registrar_port
        )
        self.process: str = args.process or (config.inspect_process if config else INSPECT_PROCESS)
        names = self.cert.node_names
        self.name: str = args.name or (names[0] if names else f"inspect-{os.getpid()}@localhost")
        if self.name == self.target:
            raise ConfigError(
                f"the client certificate names {self.name}, the node being inspected; "
                "issue a separate certificate for inspecting"
            )
        if args.timeout <= 0:
            raise ConfigError("--timeout must be > 0")
        self.timeout: float = args.timeout


def _host_of(node: str) -> str:
    return node.partition("@")[2]


def inspect_node(plan: _Plan) -> dict[str, Any]:
    """Connect, ask, and return the target's report plus this connection's own view."""
    node = start_inspecting_node(plan)
    try:
        return ask(node, plan)
    finally:
        node.stop()


def start_inspecting_node(plan: _Plan) -> gen.Node:
    """The short-lived hidden node that dials the target (with a route to it, if given)."""
    from ergo_py import start_node

    cam = gen.create_cert_auth_manager(plan.cert)
    cam.set_root_cas(plan.pool if plan.pool is not None else gen.CertPool())
    options = gen.NodeOptions(cert_manager=cam)
    options.network.mode = gen.NetworkMode.HIDDEN
    options.network.cookie = plan.cookie
    options.network.insecure_skip_verify = plan.insecure
    options.network.registrar_port = plan.registrar_port
    options.network.connect_timeout = min(plan.timeout, options.network.connect_timeout)
    options.shutdown_timeout = 2.0
    node = start_node(plan.name, options)
    if plan.route is not None:
        host, port = plan.route
        node.network().add_route(
            re.escape(plan.target), gen.NetworkRoute(host=host, port=port, tls=True)
        )
    return node


def ask(node: gen.Node, plan: _Plan) -> dict[str, Any]:
    """Call the target's inspection process from ``node``: its report, and our connection."""
    network = node.network()
    try:
        report = node.call(gen.ProcessID(plan.process, plan.target), "inspect", plan.timeout)
    except gen.ErrTimeout:
        raise InspectFailed(f"{plan.target} did not answer within {plan.timeout:g} s") from None
    except gen.ErrProcessUnknown:
        raise InspectFailed(
            f"{plan.target} has no process {plan.process!r} (is it run by 'ergo-py node run'?)"
        ) from None
    except gen.ErrNoConnection as exc:
        raise InspectFailed(f"cannot connect to {plan.target}: {exc}") from None
    if not isinstance(report, dict):
        raise InspectFailed(f"{plan.target} answered something else: {report!r:.200}")
    try:
        here = plain(network.info(plan.target))
    except gen.ErrNoConnection:
        here = None
    report["inspector"] = {"name": plan.name, "connection": here}
    return report


def _short(fp: Any) -> str:
    return f"{str(fp)[:16]}" if fp else "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_report(report: dict[str, Any]) -> str:
    """The report as readable text: the node's certificate, then one row per connection."""
    out = [f"node {report.get('node')} (ergo-py {report.get('ergo_py_version', '?')})"]
    cert = report.get("cert")
    if cert:
        out.append(
            f"certificate  v{cert['version']}  {cert['fingerprint']}\n"
            f"  subject {cert['subject']}  not after {cert['not_after']}\n"
            f"  client auth {cert['client_auth']}  client CAs {_pools(cert['client_cas'])}"
            f"  root CAs {_pools(cert['root_cas'])}"
        )
    else:
        out.append("certificate  none (plain TCP)")
    watcher = report.get("watcher")
    if watcher:
        out.append(
            f"  files {watcher['cert_file']}, {watcher['key_file']}"
            f"  reloads {watcher['reloads']}  last error {watcher['last_error'] or '-'}"
        )
    peers = report.get("peers") or []
    out.append(f"connections ({len(peers)})")
    if peers:
        rows = [
            [
                "PEER",
                "LINKS",
                "TLS",
                "LOCAL CERT",
                "PEER CERT",
                "PEER SUBJECT",
                "PEER NOT AFTER",
                "VERIFIED",
                "IN",
                "OUT",
            ]
        ]
        me = (report.get("inspector") or {}).get("name")
        for p in peers:
            local = _short(p.get("local_cert_fingerprint"))
            if p.get("local_cert_version") is not None:
                local += f" (v{p['local_cert_version']})"
            rows.append(
                [
                    str(p.get("peer")) + (" (this inspection)" if p.get("peer") == me else ""),
                    str(p.get("pool_links")),
                    str(p.get("tls_version") or "plain"),
                    local,
                    _short(p.get("peer_cert_fingerprint")),
                    str(p.get("peer_cert_subject") or "-"),
                    str(p.get("peer_cert_not_after") or "-"),
                    "yes" if p.get("identity_verified") else "no",
                    str(p.get("messages_in")),
                    str(p.get("messages_out")),
                ]
            )
        out.extend("  " + line for line in _table(rows))
    snap = report.get("observer")
    if snap:
        health = snap["health"]
        out.append(
            "health: "
            + ("ready" if health["ready"] else "not ready: " + "; ".join(health["reasons"]))
        )
        events = snap.get("events") or []
        out.append(f"recent events ({len(events)}, newest first)")
        out.extend(f"  {e['at'][11:23]}  {e['kind']}  {e['text']}" for e in events[:10])
        procs = snap.get("processes") or []
        out.append(f"processes {len(procs)}, mailboxes {sum(p['mailbox'] for p in procs)} messages")
    here = (report.get("inspector") or {}).get("connection")
    if here:
        out.append(
            f"this inspection's connection: {here.get('tls_version') or 'plain TCP'}, "
            f"{report.get('node')} presented {here.get('peer_cert_fingerprint') or '-'}"
            f" (identity verified: {'yes' if here.get('identity_verified') else 'no'})"
        )
    return "\n".join(out)


def _pools(fps: list[str] | None) -> str:
    if fps is None:
        return "system"
    return ", ".join(_short(f) for f in fps) or "none"


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    plan = _Plan(args)
    try:
        report = inspect_node(plan)
    except InspectFailed as exc:
        print(f"ergo-py inspect: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    return 0
