"""Multi-node test harness: ``Cluster``, the ``ergo_cluster`` pytest fixture, small actors.

Nodes run in the test's process or, as ``ProcessNode``, in child processes.
``Pong``, ``Echo``, ``Idle``, ``Sink`` and ``Watcher`` are the actors tests,
benchmarks, examples and the demo share (``ergo_py.testing.actors``).
"""

from ergo_py.testing.actors import Echo, Idle, Pong, Sink, Watcher
from ergo_py.testing.cluster import Cluster, free_port
from ergo_py.testing.process_node import ErrNodeProcessExited, ProcessNode, RemoteError

__all__ = [
    "Cluster",
    "Echo",
    "ErrNodeProcessExited",
    "Idle",
    "Pong",
    "ProcessNode",
    "RemoteError",
    "Sink",
    "Watcher",
    "free_port",
]
