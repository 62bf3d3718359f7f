"""Multi-node test harness: ``Cluster`` and the ``ergo_cluster`` pytest fixture."""

from ergo_py.testing.cluster import Cluster, free_port

__all__ = ["Cluster", "free_port"]
