"""pytest fixtures for nodes on real addresses: ``ergo_netns_cluster`` and ``ergo_netns``.

Loaded through the ``pytest11`` entry point, beside ``ergo_py.testing.plugin``.
Both skip the test, saying why, where network namespaces cannot be made
(not root, no iproute2, no permission): see
:func:`ergo_py.testing.netns.unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import pytest

from ergo_py.testing.cluster import Cluster

__all__ = ["NetnsFactory", "ergo_netns", "ergo_netns_cluster"]

KEEPALIVE_PERIOD = 0.5
"""The fixtures' keepalive period: a silent peer is found within 3 of them (1.5 s)."""


class NetnsFactory(Protocol):
    def __call__(
        self,
        n: int = 3,
        names: Iterable[str] | None = None,
        *,
        keepalive_period: float = KEEPALIVE_PERIOD,
        **options: Any,
    ) -> Cluster: ...


def _skip_unless_available() -> None:
    from ergo_py.testing.netns import unavailable

    reason = unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces: {reason}")


@pytest.fixture
def ergo_netns() -> Iterator[NetnsFactory]:
    """A factory of netns clusters, all closed after the test.

    ``ergo_netns(n=3, names=None, keepalive_period=0.5, **options)``: ``n``
    nodes (or bare ``names``) each in a namespace of its own; ``options``
    are set on every node's ``NetworkOptions`` (``handshake_timeout=1.0``...).
    """
    _skip_unless_available()
    made: list[Cluster] = []

    def make(
        n: int = 3,
        names: Iterable[str] | None = None,
        *,
        keepalive_period: float = KEEPALIVE_PERIOD,
        **options: Any,
    ) -> Cluster:
        cluster = Cluster(n, names, netns=True, start=False)
        made.append(cluster)
        for name in cluster.names:
            node_options = cluster.node_options(name)
            node_options.network.keepalive_period = keepalive_period
            for key, value in options.items():
                if not hasattr(node_options.network, key):
                    raise TypeError(f"NetworkOptions has no {key!r}")
                setattr(node_options.network, key, value)
            cluster.start(name, node_options)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


@pytest.fixture
def ergo_netns_cluster(ergo_netns: NetnsFactory) -> Cluster:
    """Three nodes ``n1@10.213.0.1`` .. ``n3@10.213.0.3``, each in a namespace of its own.

    Mutual TLS, keepalive every 0.5 s; ``cut``/``heal``/``isolate``/
    ``rejoin``/``delay``/``stall`` break the network under them.
    """
    return ergo_netns(3)
