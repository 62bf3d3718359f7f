"""pytest plugin: the ``ergo_cluster`` and ``ergo_process_cluster`` fixtures.

Loaded automatically through the ``pytest11`` entry point when ergo_py is
installed. Each gives a three-node mTLS ``Cluster``, closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ergo_py.testing.cluster import Cluster


@pytest.fixture
def ergo_cluster() -> Iterator[Cluster]:
    """Three nodes ``n1@127.0.0.1`` .. ``n3@127.0.0.1`` on mutual TLS, in this process."""
    with Cluster(3) as cluster:
        yield cluster


@pytest.fixture
def ergo_process_cluster() -> Iterator[Cluster]:
    """The same three nodes, each in a child process of its own (about a second to start)."""
    with Cluster(3, processes=True) as cluster:
        yield cluster
