"""The node runtime: process table, names, links and monitors, routing.

Use ``ergo_py.start_node``; the modules here are internal.
"""

from __future__ import annotations

from ergo_py.gen.meta import AppServerFactory
from ergo_py.gen.node import Node
from ergo_py.gen.options import NodeOptions
from ergo_py.node.backend import DisabledBackend, default_backend
from ergo_py.node.core import BackendFactory
from ergo_py.node.local import LocalNode
from ergo_py.node.names import next_creation, validate_node_name

__all__ = ["BackendFactory", "DisabledBackend", "LocalNode", "start_node"]


def start_node(
    name: str,
    options: NodeOptions | None = None,
    *,
    backend_factory: BackendFactory | None = None,
    app_server: AppServerFactory | None = None,
) -> Node:
    """Start a node called ``name`` (``name@host``); see ``ergo_py.start_node``.

    ``app_server`` makes the web servers of ``options.metrics`` and
    ``options.observer`` (``ergo_py.start_node`` passes ``meta.serve_app``).
    """
    atom = validate_node_name(name)
    options = options if options is not None else NodeOptions()
    if not isinstance(options, NodeOptions):
        from ergo_py.gen.errors import NodeError

        raise NodeError(f"options must be gen.NodeOptions, got {type(options).__name__}")
    return LocalNode(atom, next_creation(), options, backend_factory or default_backend, app_server)
