"""The 16-node scale scenario, shortened: no message lost through every rotation and a crash.

``make bench-cluster`` runs the full one (``benchmarks/cluster.py``) and
prints its figures; this runs the same steps with less traffic time and
checks the account: every message sent is delivered, failed with an error
the sender saw, or gone with the killed node, and none is lost.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "cluster.py"


def _scenario() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ergo_bench_cluster", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sixteen_nodes_lose_nothing_through_rotations_and_a_crash() -> None:
    scenario = _scenario()
    report = scenario.run(scenario.Settings(nodes=16, before=5.0, after=3.0), log=lambda _: None)
    print(report.text())
    f = report.figures
    assert report.nodes == 16 and report.connections == 120
    assert f["lost"] == 0 and f["wrong_replies"] == 0 and report.reordered == 0
    assert f["sent"] == f["delivered"] + f["failed"] + f["crashed"] + f["lost"]
    assert f["calls"] > 0 and f["sends"] > 0
    # failures only while the killed node was away, and said so: no connection,
    # a timeout, or (the restarted node is up but has not registered its actors yet)
    # the peer's own "no such process"
    assert set(report.errors) <= {"ErrNoConnection", "ErrTimeout", "ErrProcessUnknown"}
    assert f["failed"] + f["crashed"] < 0.2 * f["sent"]
    assert report.latency["before"][0] > 0 and report.latency["during rotation"][0] > 0
