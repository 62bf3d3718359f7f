"""Reaching a running node from the command line (``inspect``, ``observer``, ``send``, ``call``).

A short-lived hidden node (it dials out only: no acceptor, no registration)
with a client certificate dials the target. The client certificate must name
the dialling node (``ergo://NAME@HOST``): a mutual-TLS node checks that
dialers are who they claim to be. Issue one for the purpose (``ergo-py cert
issue inspect@HOST ...``); the client node takes its name from it. Do not
borrow another running node's certificate: the target would take the client
for that node and drop its real connection to it (a certificate naming the
target itself is refused here).

A failed connection is explained: which check failed (the target's
certificate against our CA, ours against the target's, the cookie) and what
to do, instead of OpenSSL's words alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ergo_py import gen
from ergo_py.cli.checks import rel
from ergo_py.cli.config import INSPECT_PROCESS, ConfigError, NodeConfig, load_config
from ergo_py.lib import load_x509_key_pair

__all__ = [
    "DEFAULT_TIMEOUT",
    "ClientPlan",
    "Unreachable",
    "explain",
    "host_port",
    "not_listening",
    "start_client_node",
    "target_options",
]

DEFAULT_TIMEOUT = 10.0

F = TypeVar("F", bound=Callable[..., Any])


class Unreachable(gen.ErgoError):
    """The target could not be reached or did not answer (exit status 1)."""


def host_port(ctx: Any, param: Any, text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def target_options(f: F) -> F:
    """The options that say which node to reach and how (shared by four commands)."""
    opts = [
        click.option(
            "--config",
            type=click.Path(dir_okay=False),
            help="A node config: cookie, CA (tls.root_cas), route (its first acceptor) and "
            "the client certificate ([inspect] cert/key) come from it.",
        ),
        click.option("--cookie", help="The cluster cookie.  [default: the config's]"),
        click.option(
            "--cert",
            type=click.Path(dir_okay=False),
            help="Client certificate PEM; it names the dialling node.  [default: [inspect] cert]",
        ),
        click.option("--key", type=click.Path(dir_okay=False), help="Its private key PEM."),
        click.option(
            "--ca",
            type=click.Path(dir_okay=False),
            help="CA PEM that verifies the target's certificate.  [default: tls.root_cas]",
        ),
        click.option(
            "--route",
            callback=host_port,
            metavar="HOST:PORT",
            help="Where the target listens.  [default: the config's acceptor, else the registrar]",
        ),
        click.option(
            "--registrar-port",
            type=int,
            help=f"Where to resolve the node.  [default: {gen.NetworkOptions.registrar_port}]",
        ),
        click.option("--name", help="Name of the dialling node.  [default: from --cert]"),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to connect (retrying while the node starts) and to get an answer.",
        ),
        click.option(
            "--insecure-skip-verify",
            is_flag=True,
            help="Do not verify the target's certificate (its fingerprint is still shown).",
        ),
        click.option("-v", "--verbose", is_flag=True, help="Log the connection attempt."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


class ClientPlan:
    """Everything needed to reach the target, from the options and the config."""

    def __init__(self, node: str | None, opts: dict[str, Any], process: str | None = None) -> None:
        config = load_config(opts["config"]) if opts.get("config") else None
        self.target: str = node or (config.name if config else "")
        if not self.target:
            raise ConfigError("name the node (or give --config)")
        self.cookie: str = opts.get("cookie") or (config.cookie if config else "")
        if not self.cookie:
            raise ConfigError("--cookie is required (or give --config)")
        cert = opts.get("cert") or (config.inspect_cert if config else None)
        key = opts.get("key") or (config.inspect_key if config else None)
        if cert is None or key is None:
            raise ConfigError(
                "a client certificate is required: --cert and --key, or [inspect] cert/key "
                "in the config (the node's own certificate names the node, not this client)"
            )
        self.cert_file, self.key_file = Path(cert), Path(key)
        self.cert = load_x509_key_pair(cert, key)
        ca = opts.get("ca") or (config.tls.root_cas if config and config.tls else None)
        self.insecure = bool(opts.get("insecure_skip_verify"))
        if ca is None and not self.insecure:
            raise ConfigError("--ca is required to verify the target (or --insecure-skip-verify)")
        self.ca_file = Path(ca) if ca is not None else None
        self.pool = gen.CertPool.from_file(ca) if ca is not None else None
        self.route: tuple[str, int] | None = opts.get("route")
        if config and self.route is None:
            self.route = _route_in(config, self.target)
        self.registrar_port: int = opts.get("registrar_port") or (
            config.registrar_port if config else gen.NetworkOptions.registrar_port
        )
        self.process: str = process or (config.inspect_process if config else INSPECT_PROCESS)
        names = self.cert.node_names
        self.name: str = opts.get("name") or (names[0] if names else f"cli-{os.getpid()}@localhost")
        if self.name == self.target:
            raise ConfigError(
                f"the client certificate names {self.name}, the node being reached; "
                "issue a separate certificate for the command line (ergo-py cert issue "
                f"inspect@{_host_of(self.target)} ...)"
            )
        self.timeout: float = float(opts.get("timeout") or DEFAULT_TIMEOUT)


def _route_in(config: NodeConfig, target: str) -> tuple[str, int] | None:
    """Where ``config`` says ``target`` listens: its own acceptor, or a static route."""
    if target == config.name and config.acceptors:
        acc = config.acceptors[0]
        host = acc.host if acc.host not in ("", "0.0.0.0", "::") else _host_of(config.name)
        return host, acc.port
    for r in sorted(config.routes, key=lambda r: -r.weight):
        if re.fullmatch(r.match, target):
            return r.host, r.port
    return None


def _host_of(node: str) -> str:
    return node.partition("@")[2]


def start_client_node(plan: ClientPlan) -> gen.Node:
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


_VERIFY = re.compile(r"certificate verify failed: ([^(]+?)\s*(\(_ssl|$)")
_ALERT = re.compile(r"(tlsv1[0-9]? alert [a-z ]+|sslv3 alert [a-z ]+)")


def explain(exc: BaseException, plan: ClientPlan) -> str:
    """What a failed connection to the target means, the check that failed, and the fix."""
    text = str(exc)
    where = f"cannot connect to {plan.target}"
    m = _VERIFY.search(text)
    if m:
        ca = rel(plan.ca_file) if plan.ca_file is not None else "the CA given"
        return (
            f"{where}: the certificate it presented does not verify against the CA in {ca} "
            f"(check: CA chain; OpenSSL says: {m.group(1)}). Fix: give --ca (or tls.root_cas in "
            f"the config) the CA that issued {plan.target}'s certificate"
        )
    m = _ALERT.search(text)
    if m or "refused our TLS client certificate" in text:
        said = f"TLS alert: {m.group(1)}" if m else "it closed the connection"
        return (
            f"{where}: it refused this client's certificate {rel(plan.cert_file)} "
            f"(check: client certificate against its tls.client_cas; {said}). "
            "Fix: issue the client certificate from the CA that node trusts "
            "(ergo-py cert issue inspect@HOST --ca-dir THAT_CA_DIR --out PREFIX)"
        )
    if "bad cookie" in text:
        return f"{where}: it refused the cookie (check: cookie). Fix: give the cluster's --cookie"
    if "wrong node" in text:
        return (
            f"{where}: the node at that address is not {plan.target} (check: node name). "
            "Fix: give the right --route or node name"
        )
    if not_listening(exc):
        route = f"{plan.route[0]}:{plan.route[1]}" if plan.route else "its registered address"
        return (
            f"{where}: nothing listens at {route} (check: reachable). Fix: start the node "
            "(ergo-py node run CONFIG) or give the right --route"
        )
    return f"{where}: {text.removeprefix(where + ': ')}"


def not_listening(exc: BaseException) -> bool:
    """Nothing listens there (yet): the one failure worth retrying while a node starts."""
    return "Connection refused" in str(exc) or "Errno 111" in str(exc)
