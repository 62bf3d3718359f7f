"""Multi-node test harness: ``Cluster`` and the ``ergo_cluster`` pytest fixture.

Nodes run in the test's process or, as ``ProcessNode``, in child processes.
"""

from ergo_py.testing.cluster import Cluster, free_port
from ergo_py.testing.process_node import ErrNodeProcessExited, ProcessNode, RemoteError

__all__ = ["Cluster", "ErrNodeProcessExited", "ProcessNode", "RemoteError", "free_port"]
