"""``ergo-py observer NODE``: the observer page of a running node, served locally.

Reaches the node the way ``ergo-py inspect`` does (a hidden node with a
client certificate calls the node's inspection process, registered by
``ergo-py node run``; the same arguments) and keeps that connection. Serves
the page (``/``) and its data (``/observer.json``) on ``--listen`` (plain
HTTP, default 127.0.0.1:9911: the page is for the person at this machine);
each request asks the node for its snapshot (``node.observer_snapshot()``,
the one the node's own ``options.observer`` page shows), so the page, which
polls every second, follows the node live. Stops on SIGINT/SIGTERM.

Exit status: 0 stopped, 1 the node could not be reached at start, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from ergo_py.cli import inspect
from ergo_py.gen.errors import ErgoError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "observer",
        help="serve a running node's observer page (nodes, connections, certificates)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_target_arguments(p)
    p.add_argument(
        "--listen",
        type=inspect._host_port,
        default=("127.0.0.1", 9911),
        help="HOST:PORT to serve the page on (default 127.0.0.1:9911; plain HTTP)",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    from ergo_py import meta
    from ergo_py.node import observer_page

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    plan = inspect._Plan(args)
    node = inspect.start_inspecting_node(plan)
    try:

        def snap() -> dict[str, Any]:
            report = inspect.ask(node, plan)
            data = report.get("observer")
            if not isinstance(data, dict):
                raise inspect.InspectFailed(f"{plan.target} has no observer snapshot (old node?)")
            return data

        try:
            snap()
        except (inspect.InspectFailed, ErgoError) as exc:
            print(f"ergo-py observer: {exc}", file=sys.stderr)
            return 1
        host, port = args.listen
        web = meta.WebServer(
            meta.WebServerOptions(host=host, port=port, app=observer_page.make_app(snap), tls=False)
        )
        node.spawn_meta(web)
        print(f"observer of {plan.target}: http://{host}:{web.port}/", flush=True)
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5) and node.is_alive():
            pass
        return 0
    finally:
        node.stop()
