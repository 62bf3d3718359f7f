"""ergo_py: Ergo-style distributed actor nodes with live mTLS certificate rotation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ergo_py._version import __version__

if TYPE_CHECKING:
    from ergo_py.gen.node import Node
    from ergo_py.gen.options import NodeOptions

__all__ = ["__version__", "start_node"]


def start_node(name: str, options: NodeOptions | None = None) -> Node:
    """Start a node called ``name`` (``name@host``) and return it.

    Raises ``gen.NodeError`` for a bad name or options, or when a node of
    that name already runs in this process. With
    ``options.network.mode == gen.NetworkMode.DISABLED`` the node has no
    network: anything addressed to another node fails with
    ``gen.ErrNoConnection``.
    """
    from ergo_py.meta.web import serve_app
    from ergo_py.node import start_node as _start

    return _start(name, options, app_server=serve_app)
