"""pytest plugin: the ``ergo_cluster`` and ``ergo_process_cluster`` fixtures, configurable.

Loaded automatically through the ``pytest11`` entry point when ergo_py is
installed. Each fixture gives a ``Cluster``, closed after the test. What it
looks like is decided, most specific first, by:

1. the ``ergo_cluster`` marker on the test (or its class/module):
   ``@pytest.mark.ergo_cluster(size=2, names=[...], processes=True, tls=False,
   netns=False, cookie="...")``;
2. the command line: ``--ergo-size``, ``--ergo-names``, ``--ergo-processes``,
   ``--ergo-no-tls``;
3. ini settings (``pytest.ini`` / ``[tool.pytest.ini_options]``):
   ``ergo_size``, ``ergo_names``, ``ergo_processes``, ``ergo_tls``;
4. the defaults: three nodes ``n1@127.0.0.1`` .. ``n3@127.0.0.1``, in this
   process, mutual TLS on.

``ergo_process_cluster`` is the same with ``processes=True`` unless a marker
says otherwise. A marker key that is not one of the above is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ergo_py.testing.cluster import Cluster

_MARKER_KEYS = frozenset({"size", "names", "processes", "tls", "netns", "cookie"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ergo_py", "ergo_py test clusters (ergo_cluster fixture)")
    group.addoption(
        "--ergo-size", type=int, default=None, help="nodes in each ergo_cluster (default 3)"
    )
    group.addoption(
        "--ergo-names",
        default=None,
        help="comma-separated node names for ergo_cluster (default n1@127.0.0.1, ...)",
    )
    group.addoption(
        "--ergo-processes",
        action="store_true",
        default=None,
        help="run every ergo_cluster node in a child process of its own",
    )
    group.addoption(
        "--ergo-no-tls",
        action="store_true",
        default=None,
        help="plain TCP between ergo_cluster nodes (default: mutual TLS)",
    )
    parser.addini("ergo_size", "nodes in each ergo_cluster", default="3")
    parser.addini("ergo_names", "node names for ergo_cluster (whitespace-separated)", type="args")
    parser.addini("ergo_processes", "nodes in child processes", type="bool", default=False)
    parser.addini("ergo_tls", "mutual TLS between nodes", type="bool", default=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ergo_cluster(size=3, names=None, processes=False, tls=True, netns=False, cookie=None): "
        "how the ergo_cluster / ergo_process_cluster fixture builds its Cluster",
    )


def cluster_settings(request: pytest.FixtureRequest, processes: bool = False) -> dict[str, Any]:
    """The ``Cluster`` arguments for this test: marker, then options, then ini, then defaults."""
    config = request.config
    size = config.getoption("--ergo-size") or int(config.getini("ergo_size"))
    opt_names = config.getoption("--ergo-names")
    names: list[str] | None = (
        [n.strip() for n in opt_names.split(",") if n.strip()]
        if opt_names
        else list(config.getini("ergo_names")) or None
    )
    settings: dict[str, Any] = {
        "n": size,
        "names": names,
        "processes": processes
        or bool(config.getoption("--ergo-processes"))
        or bool(config.getini("ergo_processes")),
        "tls": not config.getoption("--ergo-no-tls") and bool(config.getini("ergo_tls")),
    }
    marker = request.node.get_closest_marker("ergo_cluster")
    if marker is not None:
        if marker.args:
            raise pytest.UsageError("ergo_cluster marker: give keywords (size=..., names=...)")
        unknown = set(marker.kwargs) - _MARKER_KEYS
        if unknown:
            raise pytest.UsageError(
                f"ergo_cluster marker: unknown {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_MARKER_KEYS))})"
            )
        kw = dict(marker.kwargs)
        if "size" in kw:
            settings["n"] = kw.pop("size")
            settings["names"] = None if "names" not in kw else settings["names"]
        settings.update(kw)
    return settings


@pytest.fixture
def ergo_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A ``Cluster`` (default: ``n1@127.0.0.1`` .. ``n3@127.0.0.1`` on mutual TLS, in process)."""
    with Cluster(**cluster_settings(request)) as cluster:
        yield cluster


@pytest.fixture
def ergo_process_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The same, each node in a child process of its own (about a second to start)."""
    with Cluster(**cluster_settings(request, processes=True)) as cluster:
        yield cluster
