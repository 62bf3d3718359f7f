"""``LocalNode``: the ``gen.Node`` that ``start_node`` returns, and nothing more.

It owns the node's ``Core`` and forwards to it; what processes and the
network call (``send_from``, ``route_send``, ...) is not reachable from here.
"""

from __future__ import annotations

from typing import Any

from ergo_py.gen.certmanager import CertManager
from ergo_py.gen.events import Health
from ergo_py.gen.identifiers import PID, Alias, Atom
from ergo_py.gen.meta import AppServerFactory, MetaBehavior
from ergo_py.gen.node import Network, Node, SpawnSpec, Target
from ergo_py.gen.options import DEFAULT_REQUEST_TIMEOUT, NodeOptions
from ergo_py.node.core import BackendFactory, Core


class LocalNode(Node):
    """A node running in this process; see ``gen.Node``."""

    def __init__(
        self,
        name: Atom,
        creation: int,
        options: NodeOptions,
        backend_factory: BackendFactory,
        app_server: AppServerFactory | None = None,
    ) -> None:
        core = Core(self, name, creation, options, backend_factory)
        self._core = core
        self._name = name
        self._creation = creation
        self._pid = core.pid
        try:
            core.start_web_services(app_server)
        except BaseException:
            core.stop()
            raise

    def _spawn(self, spec: SpawnSpec) -> PID:
        return self._core.spawn_from(self._pid, spec)

    def register_name(self, name: str, pid: PID) -> None:
        self._core.register_name(name, pid)

    def unregister_name(self, name: str) -> PID:
        return self._core.unregister_name(name)

    def where_is(self, name: str) -> PID | None:
        return self._core.where_is(name)

    def send(self, to: Target, message: Any) -> None:
        self._core.send_from(self._pid, to, message)

    def call(self, to: Target, request: Any, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        return self._core.call_from(self._pid, to, request, timeout)

    def send_exit(self, to: Target, reason: Any) -> None:
        self._core.send_exit_from(self._pid, to, reason)

    def cert_manager(self) -> CertManager | None:
        return self._core.cert_manager()

    def spawn_meta(self, behavior: MetaBehavior) -> Alias:
        return self._core.spawn_meta(behavior)

    def send_exit_meta(self, alias: Alias, reason: Any = None) -> None:
        self._core.send_exit_meta(alias, reason)

    def subscribe(self, pid: PID, *event_types: type) -> None:
        self._core.subscribe(pid, event_types)

    def unsubscribe(self, pid: PID) -> None:
        self._core.unsubscribe(pid)

    def health(self) -> Health:
        return self._core.health()

    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on (None: ``options.metrics`` not set)."""
        return self._core.metrics_port

    def observer_snapshot(self) -> dict[str, Any]:
        from ergo_py.node import observer_page

        return observer_page.snapshot(self._core)

    def observer_port(self) -> int | None:
        """The port the observer page is served on (None: ``options.observer`` not set)."""
        return self._core.observer_port

    def is_alive(self) -> bool:
        return self._core.is_alive()

    def network(self) -> Network:
        return self._core.network()

    def stop(self) -> None:
        self._core.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self._core.wait(timeout)

    def __repr__(self) -> str:
        return f"<Node {self._name} creation={self._creation}>"
