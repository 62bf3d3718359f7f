"""``/metrics`` and the observer of nodes in child processes and in network namespaces.

A process node serves them on 127.0.0.1 already; a netns node serves them
inside its namespace, and its ``ProcessNode`` handle relays each port to
127.0.0.1 here. Either way the test scrapes with a real HTTP client, over
HTTPS with a client certificate from the cluster's CA.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from test_observe import client_ctx, value

from ergo_py import gen
from ergo_py.testing import Cluster, Echo
from ergo_py.testing.netns import unavailable

_NETNS = unavailable()


@pytest.fixture(params=["processes", "netns"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.param == "netns" and _NETNS is not None:
        pytest.skip(f"netns: {_NETNS}")
    netns = request.param == "netns"
    names = ["m", "p"] if netns else ["m@127.0.0.1", "p@127.0.0.1"]
    with Cluster(names=names, processes=True, netns=netns, start=False) as c:
        m, p = c.names
        options = c.node_options(m)
        options.metrics = gen.MetricsOptions(port=0)
        options.observer = gen.ObserverOptions(port=0)
        c.start(m, options)
        c.start(p)
        yield c


def _client(cluster: Cluster) -> httpx.Client:
    ctx = client_ctx(cluster)
    ctx.check_hostname = False  # a netns node's certificate names its own IP, not 127.0.0.1
    return httpx.Client(verify=ctx, timeout=10)


def test_metrics_and_observer_of_a_process_node_are_reachable(cluster: Cluster) -> None:
    m, p = cluster.names
    echo = cluster[p].spawn(Echo)
    assert cluster[m].call(echo, 1) == 1
    metrics_port, observer_port = cluster[m].metrics_port(), cluster[m].observer_port()
    assert metrics_port and observer_port
    assert cluster[p].metrics_port() is None  # not asked for
    with _client(cluster) as http:
        text = http.get(f"https://127.0.0.1:{metrics_port}/metrics").text
        assert value(text, "ergo_connections", peer=p) == 1
        assert http.get(f"https://127.0.0.1:{metrics_port}/readyz").status_code == 200
        snapshot = http.get(f"https://127.0.0.1:{observer_port}/observer.json").json()
    assert snapshot["node"] == m and snapshot["health"]["ready"] is True
    assert [c["peer"] for c in snapshot["connections"]] == [p]
    assert cluster[m].metrics_port() == metrics_port  # the same relay each time
