"""``ergo-py observer NODE``: the observer page of a running node, served locally.

Reaches the node the way ``ergo-py inspect`` does (a client node with a
client certificate calls the node's inspection process, registered by
``ergo-py node run``; the same options) and keeps that connection. Serves
the page (``/``) and its data (``/observer.json``) on ``--listen`` (plain
HTTP, default 127.0.0.1:9911: the page is for the person at this machine);
each request asks the node for its snapshot (``node.observer_snapshot()``,
the one the node's own ``options.observer`` page shows), so the page, which
polls every second, follows the node live. Stops on SIGINT/SIGTERM.

Exit status: 0 stopped, 1 the node could not be reached at start, 2 bad arguments.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from ergo_py.cli import inspect
from ergo_py.cli.client import ClientPlan, Unreachable, host_port, start_client_node, target_options

__all__ = ["command", "serve"]


def serve(plan: ClientPlan, listen: tuple[str, int], stop: threading.Event) -> int:
    """Serve the target's page on ``listen`` until ``stop`` is set; Unreachable at start."""
    from ergo_py import meta
    from ergo_py.node import observer_page

    node = start_client_node(plan)
    try:

        def snap() -> dict[str, Any]:
            report = inspect.ask(node, plan)
            data = report.get("observer")
            if not isinstance(data, dict):
                raise Unreachable(f"{plan.target} has no observer snapshot (old node?)")
            return data

        snap()
        host, port = listen
        web = meta.WebServer(
            meta.WebServerOptions(host=host, port=port, app=observer_page.make_app(snap), tls=False)
        )
        node.spawn_meta(web)
        click.echo(f"observer of {plan.target}: http://{host}:{web.port}/")
        while not stop.wait(0.5) and node.is_alive():
            pass
        return 0
    finally:
        node.stop()


@click.command("observer")
@click.argument("node", required=False)
@target_options
@click.option(
    "--listen",
    callback=host_port,
    default="127.0.0.1:9911",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to serve the page (plain HTTP: for the person at this machine).",
)
def command(node: str | None, listen: tuple[str, int], **opts: Any) -> None:
    """Serve a running node's observer page (nodes, connections, certificates, events)."""
    inspect.configure_logging(opts["verbose"])
    plan = ClientPlan(node, opts)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    serve(plan, listen, stop)
