"""``ergo-py inspect NODE``: a running node's connections and certificates.

A short-lived client node (see :mod:`ergo_py.cli.client`) calls the target's
inspection process (registered by ``ergo-py node run``) over a fresh
connection, prints what it answered (``rich`` tables, or ``--json``) and
stops. The fresh connection also shows which certificate the target presents
to new handshakes right now. The report is the node's own
``node.observer_snapshot()`` plus its certificate state: one source for the
observer page, ``/metrics`` and this command.

Exit status: 0 answered, 1 the target could not be reached or did not answer,
2 bad arguments or files.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from ergo_py import gen
from ergo_py.cli.client import (
    ClientPlan,
    Unreachable,
    explain,
    not_listening,
    start_client_node,
    target_options,
)
from ergo_py.cli.node import plain
from ergo_py.net.retry import retry_until

__all__ = ["ask", "command", "format_report", "inspect_node", "render_report"]


def ask(node: gen.Node, plan: ClientPlan) -> dict[str, Any]:
    """Call the target's inspection process from ``node``: its report, and our connection.

    Retries the connection (not the call) until ``plan.timeout`` has passed,
    so a node that is still starting is waited for.
    """
    network = node.network()
    target = gen.ProcessID(plan.process, plan.target)
    deadline = time.monotonic() + plan.timeout
    try:
        report = retry_until(
            deadline,
            lambda: node.call(target, "inspect", plan.timeout),
            (gen.ErrNoConnection,),
            retry_if=not_listening,
        )
    except gen.ErrTimeout:
        raise Unreachable(f"{plan.target} did not answer within {plan.timeout:g} s") from None
    except gen.ErrProcessUnknown:
        raise Unreachable(
            f"{plan.target} has no process {plan.process!r} (is it run by 'ergo-py node run'?)"
        ) from None
    except gen.ErrNoConnection as exc:
        raise Unreachable(explain(exc, plan)) from None
    if not isinstance(report, dict):
        raise Unreachable(f"{plan.target} answered something else: {report!r:.200}")
    try:
        here = plain(network.info(plan.target))
    except gen.ErrNoConnection:
        here = None
    report["inspector"] = {"name": plan.name, "connection": here}
    return report


def inspect_node(plan: ClientPlan) -> dict[str, Any]:
    """Connect, ask, and return the target's report plus this connection's own view."""
    node = start_client_node(plan)
    try:
        return ask(node, plan)
    finally:
        node.stop()


def _short(fp: Any) -> str:
    return f"{str(fp)[:12]}" if fp else "-"


def _pools(fps: list[str] | None) -> str:
    if fps is None:
        return "system"
    return ", ".join(_short(f) for f in fps) or "none"


def render_report(report: dict[str, Any], console: Console) -> None:
    """The report as ``rich`` output: the node's certificate, connections, health, events."""
    console.print(f"node {report.get('node')} (ergo-py {report.get('ergo_py_version', '?')})")
    cert = report.get("cert")
    if cert:
        console.print(f"certificate  v{cert['version']}  {cert['fingerprint']}", soft_wrap=True)
        console.print(f"  subject {cert['subject']}  not after {cert['not_after']}")
        console.print(
            f"  client auth {cert['client_auth']}  client CAs {_pools(cert['client_cas'])}"
            f"  root CAs {_pools(cert['root_cas'])}"
        )
    else:
        console.print("certificate  none (plain TCP)")
    watcher = report.get("watcher")
    if watcher:
        console.print(
            f"  files {watcher['cert_file']}, {watcher['key_file']}"
            f"  reloads {watcher['reloads']}  last error {watcher['last_error'] or '-'}",
            soft_wrap=True,
        )
    peers = report.get("peers") or []
    table = Table(title=f"connections ({len(peers)})", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("peer", "TLS", "our cert", "peer cert", "verified", "peer cert expires"):
        table.add_column(col, min_width=len(col) if col != "peer" else 12, overflow="fold")
    for col in ("links", "in", "out"):
        table.add_column(col, justify="right", min_width=len(col))
    me = (report.get("inspector") or {}).get("name")
    for p in peers:
        local = _short(p.get("local_cert_fingerprint"))
        if p.get("local_cert_version") is not None:
            local += f" v{p['local_cert_version']}"
        table.add_row(
            str(p.get("peer")) + (" (this inspection)" if p.get("peer") == me else ""),
            str(p.get("tls_version") or "plain"),
            local,
            _short(p.get("peer_cert_fingerprint")),
            "yes" if p.get("identity_verified") else "no",
            str(p.get("peer_cert_not_after") or "-")[:10],
            str(p.get("pool_links")),
            str(p.get("messages_in")),
            str(p.get("messages_out")),
        )
    console.print(table)
    snap = report.get("observer")
    if snap:
        health = snap["health"]
        console.print(
            "health: "
            + ("ready" if health["ready"] else "not ready: " + "; ".join(health["reasons"]))
        )
        procs = snap.get("processes") or []
        console.print(
            f"processes {len(procs)}, mailboxes {sum(p['mailbox'] for p in procs)} messages"
        )
        events = snap.get("events") or []
        ev = Table(
            title=f"recent events ({len(events)}, newest first)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for col in ("at", "kind", "what"):
            ev.add_column(col, no_wrap=col != "what")
        for e in events[:10]:
            ev.add_row(e["at"][11:23], e["kind"], e["text"])
        console.print(ev)
    here = (report.get("inspector") or {}).get("connection")
    if here:
        console.print(
            f"this inspection's connection: {here.get('tls_version') or 'plain TCP'}, "
            f"{report.get('node')} presented {here.get('peer_cert_fingerprint') or '-'}"
            f" (identity verified: {'yes' if here.get('identity_verified') else 'no'})",
            soft_wrap=True,
        )


def format_report(report: dict[str, Any], width: int = 160) -> str:
    """The report as plain text (what ``inspect`` prints to a pipe)."""
    buf = io.StringIO()
    render_report(report, Console(file=buf, width=width, no_color=True, highlight=False))
    return buf.getvalue()


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )


@click.command("inspect")
@click.argument("node", required=False)
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--process",
    help="The inspection process's registered name.  [default: [inspect] process, "
    "else ergo_py_inspect]",
)
def command(node: str | None, as_json: bool, process: str | None, **opts: Any) -> None:
    """Show a running node's connections and certificates.

    NODE is the node's name (default with --config: the config's node).
    Exit status 1 when it cannot be reached or does not answer.
    """
    configure_logging(opts["verbose"])
    plan = ClientPlan(node, opts, process)
    report = inspect_node(plan)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = 160  # a pipe or file: no reason to fold the tables at 80
        render_report(report, console)
