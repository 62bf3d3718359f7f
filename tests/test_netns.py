"""Nodes on real addresses: ``Cluster(netns=True)``, one network namespace and IP per node.

Three process nodes, each in a namespace of its own on a private bridge,
talk mTLS over 10.213.0.x. The faults break the network under them: a cut
(blackhole routes both ways) and an isolated node (its interface down) give
no FIN and no RST, so only keepalive can find out; pending calls must fail
with ``gen.ErrNoConnection`` within the keepalive bound. Skipped where
network namespaces cannot be made (not root, no iproute2, no permission).
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ergo_py import act, gen
from ergo_py.gen.options import KEEPALIVE_MISSES
from ergo_py.testing import Cluster, Echo
from ergo_py.testing.netns import _ip_binary, unavailable

_REASON = unavailable()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"netns: {_REASON}")

PERIOD = 0.5
BOUND = KEEPALIVE_MISSES * PERIOD  # 1.5 s: three silent periods
SLACK = 2.0  # scheduling on a shared 2-core machine, the call's way back over the pipe
WAIT = 10.0
PENDING = 6.0  # how long the Sleeper keeps a call pending: longer than BOUND + SLACK


class Sleeper(act.Actor):
    """Answers a call after sleeping ``request`` seconds (module-level: children import it)."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        time.sleep(float(request))
        return request


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(3, netns=True, start=False) as c:
        for name in c.names:
            options = c.node_options(name)
            options.network.keepalive_period = PERIOD
            c.start(name, options)
        yield c
    # close() removed every namespace it made
    assert c.fabric is not None
    listed = subprocess.run([_ip_binary() or "ip", "netns", "list"], capture_output=True, text=True)
    assert c.fabric.prefix not in listed.stdout


def _call_until(node: gen.Node, to: gen.PID, request: Any) -> Any:
    """The call's answer, retried while the connection is being replaced."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return node.call(to, request, timeout=2.0)
        except (gen.ErrNoConnection, gen.ErrTimeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _pending_call_fails(node: gen.Node, to: gen.PID, fault: Any) -> float:
    """Start a long call from ``node`` to ``to``, apply ``fault``: seconds until it fails."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(node.call, to, PENDING, 60.0)
        time.sleep(0.5)  # the request is on its way and the actor asleep
        assert not future.done()
        start = time.monotonic()
        fault()
        with pytest.raises(gen.ErrNoConnection):
            future.result(timeout=WAIT)
        return time.monotonic() - start


def test_three_nodes_on_three_addresses_talk_mtls(cluster: Cluster) -> None:
    names = cluster.names
    addresses = {cluster.address(n) for n in names}
    assert len(addresses) == 3 and all(a.startswith("10.213.") for a in addresses)
    assert all(n.endswith("@" + cluster.address(n)) for n in names)
    echoes = {n: cluster[n].spawn(Echo) for n in names}
    for a in names:
        for b in names:
            if a != b:
                assert cluster[a].call(echoes[b], (a, b)) == (a, b)
    for a in names:
        for b in names:
            if a != b:
                info = cluster[a].network().info(b)
                assert info["identity_verified"] and info["tls_version"]
                assert info["peer_cert_subject"] == f"CN={b},O=ergo_py"
                if info["dialed"]:
                    assert info["links"][0]["address"] == (cluster.address(b), 11144)


def test_cut_fails_pending_calls_within_the_keepalive_bound_and_heal_restores(
    cluster: Cluster,
) -> None:
    a, b = cluster.names[0], cluster.names[1]
    sleeper, echo = cluster[b].spawn(Sleeper), cluster[b].spawn(Echo)
    assert _call_until(cluster[a], sleeper, 0) == 0
    try:
        took = _pending_call_fails(cluster[a], sleeper, lambda: cluster.cut(a, b))
        assert took < BOUND + SLACK
        with pytest.raises(gen.ErrNoConnection):  # nothing gets through while cut
            cluster[a].call(echo, 0, timeout=2.0)
    finally:
        cluster.heal(a, b)
    assert _call_until(cluster[a], echo, "healed") == "healed"  # the sleeper still sleeps


def test_an_isolated_node_is_detected_within_the_keepalive_bound(cluster: Cluster) -> None:
    a, c = cluster.names[0], cluster.names[2]
    sleeper, echo = cluster[c].spawn(Sleeper), cluster[c].spawn(Echo)
    assert _call_until(cluster[a], sleeper, 0) == 0
    try:
        took = _pending_call_fails(cluster[a], sleeper, lambda: cluster.isolate(c))
        assert took < BOUND + SLACK
    finally:
        cluster.rejoin(c)
    assert _call_until(cluster[a], echo, "back") == "back"


def test_a_delayed_then_stalled_link_between_namespaces(cluster: Cluster) -> None:
    b, c = cluster.names[1], cluster.names[2]
    echo = cluster[c].spawn(Echo)
    assert _call_until(cluster[b], echo, 0) == 0
    cluster.delay(b, c, 0.25)
    start = time.monotonic()
    assert _call_until(cluster[b], echo, 1) == 1
    assert time.monotonic() - start >= 0.45  # there and back, each way held
    assert cluster.relays[(b, c)].connections >= 1
    info = cluster[b].network().info(c)
    assert info["links"][0]["address"] == ("127.0.0.1", cluster.relays[(b, c)].port)
    cluster.delay(b, c, 0)
    try:
        took = _pending_call_fails(
            cluster[b], cluster[c].spawn(Sleeper), lambda: cluster.stall(b, c)
        )
        assert took < BOUND + SLACK
    finally:
        cluster.unstall(b, c)
    assert _call_until(cluster[b], echo, "flows") == "flows"


def test_a_killed_node_restarts_on_its_address(cluster: Cluster) -> None:
    a, b = cluster.names[0], cluster.names[1]
    address = cluster.address(b)
    cluster.kill(b)
    options = cluster.node_options(b)
    options.network.keepalive_period = PERIOD
    node = cluster.start(b, options)
    assert node.name == b and cluster.address(b) == address
    echo = node.spawn(Echo)
    assert _call_until(cluster[a], echo, "again") == "again"  # a's route still fits
    assert _call_until(node, cluster[a].spawn(Echo), "back") == "back"  # and b's new one


def test_faults_need_a_netns_cluster() -> None:
    with Cluster(1, start=False) as c:
        assert c.address(c.names[0]) == "127.0.0.1"
        with pytest.raises(gen.ErrUnsupported):
            c.cut(c.names[0], "x@127.0.0.1")


def test_the_netns_fixtures_make_clusters_with_the_options_given(ergo_netns: Any) -> None:
    with pytest.raises(TypeError):
        ergo_netns(1, no_such_option=1)
    c = ergo_netns(names=["x", "y"], keepalive_period=0.3, handshake_timeout=1.5)
    x, y = c.names
    assert x.startswith("x@10.213.") and y.startswith("y@10.213.")
    assert c.options[x].network.keepalive_period == 0.3
    assert c.options[y].network.handshake_timeout == 1.5
    echo = c[y].spawn(Echo)
    assert _call_until(c[x], echo, "fixture") == "fixture"
