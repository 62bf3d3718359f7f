"""Resolving names on other hosts: a UDP query to that host's registrar (loopback addresses)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from conftest import wait_threads_gone

from ergo_py import gen
from ergo_py.gen import Route
from ergo_py.net.registrar import EmbeddedRegistrar
from ergo_py.net.registrar.client import is_local_host
from ergo_py.testing import Cluster, Pong, free_port

OTHER_HOST = "127.0.0.2"  # stands in for another machine: loopback, but not "this host"


def test_only_this_hosts_names_count_as_local() -> None:
    assert is_local_host("localhost") and is_local_host("127.0.0.1")
    assert not is_local_host(OTHER_HOST)
    assert not is_local_host("node.example.org")


def test_a_name_on_another_host_is_resolved_by_that_hosts_registrar() -> None:
    port = free_port()

    async def scenario() -> list[Route]:
        there = EmbeddedRegistrar(port=port, resolve_host=OTHER_HOST)
        await there.start(f"b@{OTHER_HOST}", [Route(host="", port=4321, tls=True)])
        here = EmbeddedRegistrar(port=port, resolve_timeout=2.0)
        try:
            return await here.resolve(f"b@{OTHER_HOST}")
        finally:
            await here.close()
            await there.close()

    assert asyncio.run(scenario()) == [Route(host="", port=4321, tls=True)]


def test_an_unknown_name_on_another_host_is_no_route() -> None:
    port = free_port()

    async def scenario() -> None:
        there = EmbeddedRegistrar(port=port, resolve_host=OTHER_HOST)
        await there.start(f"b@{OTHER_HOST}", [Route(host="", port=4321)])
        here = EmbeddedRegistrar(port=port, resolve_timeout=2.0)
        try:
            await here.resolve(f"nobody@{OTHER_HOST}")
        finally:
            await here.close()
            await there.close()

    with pytest.raises(gen.ErrNoRoute):
        asyncio.run(scenario())


def test_a_host_without_a_registrar_times_out_with_a_clear_error() -> None:
    async def scenario() -> None:
        here = EmbeddedRegistrar(port=free_port(), resolve_timeout=0.6)
        try:
            await here.resolve("b@127.0.0.3")
        finally:
            await here.close()

    with pytest.raises(gen.ErrTimeout, match=r"no registrar on 127\.0\.0\.3"):
        asyncio.run(scenario())


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[], start=False) as c:
        yield c
    assert wait_threads_gone(before) == []


def test_nodes_find_a_node_on_another_host_through_its_registrar(cluster: Cluster) -> None:
    far = f"b@{OTHER_HOST}"
    options = cluster.node_options(far)
    options.network.acceptors[0].host = OTHER_HOST
    b = cluster.start(far, options)
    cluster.managers[far].update(cluster.ca.issue(far, hosts=(OTHER_HOST,)))
    b.spawn_register("pong", Pong)
    a = cluster.start("a@127.0.0.1")
    assert a.call(gen.ProcessID("pong", far), 1) == ("pong", 1)
