"""pytest plugin: the ``ergo_cluster`` fixture (a three-node mTLS ``Cluster``).

Loaded automatically through the ``pytest11`` entry point when ergo_py is
installed. The cluster is closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ergo_py.testing.cluster import Cluster


@pytest.fixture
def ergo_cluster() -> Iterator[Cluster]:
    """Three nodes ``n1@127.0.0.1`` .. ``n3@127.0.0.1`` on mutual TLS."""
    with Cluster(3) as cluster:
        yield cluster
