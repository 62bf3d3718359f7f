"""The multi-node harness users test their own actors with."""

from __future__ import annotations

import pytest

from ergo_py import gen
from ergo_py.testing import Cluster, Echo, ProcessNode


def test_the_fixture_gives_three_connected_mtls_nodes(ergo_cluster: Cluster) -> None:
    n1, n2 = ergo_cluster.names[:2]
    ergo_cluster[n2].spawn_register("echo", Echo)
    assert ergo_cluster[n1].call(gen.ProcessID("echo", n2), "hi") == "hi"
    ergo_cluster.wait_connected(n1, n2)
    assert ergo_cluster[n1].network().info(n2)["identity_verified"] is True


def test_rotate_then_reconnect_shows_the_new_certificate(ergo_cluster: Cluster) -> None:
    n1, n2 = ergo_cluster.names[:2]
    ergo_cluster.wait_connected(n1, n2)
    cert = ergo_cluster.rotate(n2)
    ergo_cluster.disconnect(n1, n2)
    ergo_cluster.wait_connected(n1, n2)
    assert ergo_cluster[n1].network().info(n2)["peer_cert_fingerprint"] == cert.fingerprint


def test_a_stopped_node_can_be_started_again() -> None:
    with Cluster(2) as cluster:
        n1, n2 = cluster.names
        cluster[n2].spawn_register("echo", Echo)
        assert cluster[n1].call(gen.ProcessID("echo", n2), 1) == 1
        cluster.stop(n2)
        with pytest.raises(gen.ErrNoConnection):
            cluster[n1].call(gen.ProcessID("echo", n2), 2)
        cluster.start(n2).spawn_register("echo", Echo)
        assert cluster[n1].call(gen.ProcessID("echo", n2), 3) == 3


def test_the_process_fixture_gives_three_nodes_in_child_processes(
    ergo_process_cluster: Cluster,
) -> None:
    n1, n2, n3 = ergo_process_cluster.names
    assert all(isinstance(ergo_process_cluster[n], ProcessNode) for n in (n1, n2, n3))
    ergo_process_cluster[n2].spawn_register("echo", Echo)
    ergo_process_cluster.wait_connected(n1, n2)
    assert ergo_process_cluster[n1].network().info(n2)["identity_verified"] is True
    assert ergo_process_cluster[n3].call(gen.ProcessID("echo", n2), "hi") == "hi"
