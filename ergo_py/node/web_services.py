"""The node's own web services: ``/metrics`` and the observer page, each a meta-process.

Both are served only when their options ask for them, by an app server
(``gen.meta.AppServer``) the node spawns as one of its meta-processes, and
both need the ``metrics`` extra; without it the node refuses to start
(``gen.NodeError``) rather than run without what was asked for. The app
server is made by the factory the node was started with
(``ergo_py.start_node`` passes ``meta.serve_app``): ``node`` never imports
``meta``, which stands above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.errors import NodeError
from ergo_py.gen.meta import AppServerFactory
from ergo_py.gen.options import MetricsOptions, NodeOptions, ObserverOptions

if TYPE_CHECKING:
    from ergo_py.node.core import Core


def serve_metrics(
    core: Core,
    options: NodeOptions,
    pending_calls: Callable[[], int],
    app_server: AppServerFactory | None,
) -> int | None:
    """Serve ``options.metrics`` (``/metrics``, ``/healthz``, ``/readyz``); its port, or None."""
    opts = options.metrics
    if opts is None:
        return None

    def make_app() -> Any:
        from ergo_py.node import metrics

        collector = metrics.NodeCollector(
            core.observer, pending_calls, lambda: cert_managers(options)
        )
        return metrics.make_app(metrics.make_registry(collector), core.health, core.is_alive)

    tls = opts.tls if opts.tls is not None else options.cert_manager is not None
    return _serve(core, "metrics", opts, make_app, tls, None, app_server)


def serve_observer(
    core: Core, options: NodeOptions, app_server: AppServerFactory | None
) -> int | None:
    """Serve ``options.observer`` (the page at ``/``, ``/observer.json``); its port, or None."""
    opts = options.observer
    if opts is None:
        return None

    def make_app() -> Any:
        from ergo_py.node import observer_page

        return observer_page.make_app(lambda: observer_page.snapshot(core))

    has_cm = opts.cert_manager is not None or options.cert_manager is not None
    tls = opts.tls if opts.tls is not None else has_cm
    return _serve(core, "observer", opts, make_app, tls, opts.cert_manager, app_server)


def cert_managers(options: NodeOptions) -> dict[str, CertManager]:
    """The node's cert managers by role: ``node``, and ``acceptorN`` for an acceptor's own."""
    managers: dict[str, CertManager] = {}
    if options.cert_manager is not None:
        managers["node"] = options.cert_manager
    for i, acc in enumerate(options.network.acceptors):
        cm = acc.cert_manager
        if cm is not None and cm is not options.cert_manager:
            managers[f"acceptor{i}"] = cm
    return managers


def _serve(
    core: Core,
    what: str,
    opts: MetricsOptions | ObserverOptions,
    make_app: Callable[[], Any],
    tls: bool,
    cert_manager: CertManager | None,
    app_server: AppServerFactory | None,
) -> int:
    if app_server is None:
        raise NodeError(
            f"options.{what} needs a web server to serve it: start the node with "
            "ergo_py.start_node (ergo_py.node.start_node was given no app_server)"
        )
    try:
        app = make_app()
    except ImportError as exc:
        raise NodeError(
            f"options.{what} needs the metrics extra (pip install 'ergo-py[metrics]'): {exc}"
        ) from exc
    web = app_server(host=opts.host, port=opts.port, app=app, tls=tls, cert_manager=cert_manager)
    core.spawn_meta(web)
    return web.port
