"""Nodes talk to their registrar only through the ``net.Registrar`` protocol.

``NetworkOptions.registrar`` takes any object of the protocol; here an
in-memory one stands in for a real registry (etcd, say). None keeps the
embedded registrar; ``network().registrar()`` says which one is in use.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from conftest import wait_threads_gone

from ergo_py import act, gen, net
from ergo_py.testing import Cluster

HOST = "127.0.0.1"
A = f"a@{HOST}"
B = f"b@{HOST}"


class Directory:
    """What a cluster's registry holds: node name -> routes. Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routes: dict[str, list[gen.Route]] = {}


class MemoryRegistrar:
    """A ``net.Registrar`` over a shared ``Directory``, one object per node."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.registered: str | None = None
        self.resolved: list[str] = []
        self.closed = False

    async def start(self, node_name: str, routes: Sequence[gen.Route]) -> None:
        with self.directory.lock:
            if node_name in self.directory.routes:
                raise gen.ErrTaken(node_name)
            self.directory.routes[node_name] = list(routes)
        self.registered = node_name

    async def resolve(self, node_name: str) -> list[gen.Route]:
        self.resolved.append(node_name)
        with self.directory.lock:
            routes = self.directory.routes.get(node_name)
        if routes is None:
            raise gen.ErrNoRoute(node_name)
        return list(routes)

    def nodes(self) -> list[str]:
        with self.directory.lock:
            return sorted(self.directory.routes)

    async def close(self) -> None:
        self.closed = True
        with self.directory.lock:
            if self.registered is not None:
                self.directory.routes.pop(self.registered, None)
        self.registered = None


class Pong(act.Actor):
    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return ("pong", request)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    before = set(threading.enumerate())
    with Cluster(names=[], start=False) as c:
        yield c
    assert wait_threads_gone(before) == []


def start_with(
    cluster: Cluster, name: str, registrar: Any, mode: gen.NetworkMode = gen.NetworkMode.ENABLED
) -> gen.Node:
    options = cluster.node_options(name)
    options.network.registrar = registrar
    options.network.mode = mode
    return cluster.start(name, options)


def nobody_listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) != 0


def test_memory_registrar_fits_the_protocol() -> None:
    assert isinstance(MemoryRegistrar(Directory()), net.Registrar)


def test_two_nodes_find_each_other_through_the_registrar_they_were_given(
    cluster: Cluster,
) -> None:
    directory = Directory()
    reg_a, reg_b = MemoryRegistrar(directory), MemoryRegistrar(directory)
    b = start_with(cluster, B, reg_b)
    b.spawn_register("pong", Pong)
    a = start_with(cluster, A, reg_a)
    # no static route was added, and no embedded registrar runs
    assert nobody_listens(cluster.registrar_port)
    assert a.call(gen.ProcessID("pong", B), 1) == ("pong", 1)
    assert reg_a.resolved == [B]


def test_a_node_registers_its_acceptors_at_start_and_withdraws_at_stop(cluster: Cluster) -> None:
    directory = Directory()
    reg = MemoryRegistrar(directory)
    start_with(cluster, B, reg)
    port = cluster.options[B].network.acceptors[0].port
    assert directory.routes == {B: [gen.Route(host="", port=port, tls=True)]}
    assert reg.nodes() == [B]
    cluster.stop(B)
    assert reg.closed
    assert directory.routes == {}


def test_a_hidden_node_resolves_through_its_registrar_without_registering(
    cluster: Cluster,
) -> None:
    directory = Directory()
    b = start_with(cluster, B, MemoryRegistrar(directory))
    b.spawn_register("pong", Pong)
    hidden = MemoryRegistrar(directory)
    a = start_with(cluster, A, hidden, gen.NetworkMode.HIDDEN)
    assert a.call(gen.ProcessID("pong", B), 2) == ("pong", 2)
    assert hidden.resolved == [B]
    assert hidden.registered is None
    assert sorted(directory.routes) == [B]


def test_a_name_taken_in_the_registrar_keeps_the_node_from_starting(cluster: Cluster) -> None:
    directory = Directory()
    directory.routes[B] = [gen.Route(host="elsewhere", port=11144)]  # held by another host's b
    reg = MemoryRegistrar(directory)
    with pytest.raises(gen.NodeError, match="taken"):
        start_with(cluster, B, reg)
    assert reg.closed
    assert directory.routes == {B: [gen.Route(host="elsewhere", port=11144)]}


def test_an_object_that_is_not_a_registrar_is_refused(cluster: Cluster) -> None:
    with pytest.raises(gen.NodeError, match=r"net\.Registrar"):
        start_with(cluster, A, object())


def test_network_registrar_is_the_one_given(cluster: Cluster) -> None:
    reg = MemoryRegistrar(Directory())
    a = start_with(cluster, A, reg)
    assert a.network().registrar() is reg


def test_network_registrar_is_the_embedded_one_by_default(cluster: Cluster) -> None:
    a = cluster.start(A)
    b = cluster.start(B)
    reg = a.network().registrar()
    assert isinstance(reg, net.EmbeddedRegistrar)
    assert isinstance(reg, net.Registrar)
    assert reg.is_server  # the first node on the host serves
    assert reg.nodes() == [A, B]
    assert b.network().registrar() is not reg


def test_network_registrar_is_none_with_the_registrar_off(cluster: Cluster) -> None:
    options = cluster.node_options(A)
    options.network.registrar_enabled = False
    a = cluster.start(A, options)
    assert a.network().registrar() is None


def test_a_node_without_network_has_no_registrar(node: gen.Node) -> None:
    assert node.network().registrar() is None
