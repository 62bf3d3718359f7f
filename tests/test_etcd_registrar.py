"""``net.EtcdRegistrar`` against a real etcd (see etcd_fixture.py; skipped without the binary).

Nodes here find each other through etcd only: no static routes, and no
embedded registrar runs (the cluster's registrar port stays closed). The
actors are module-level so process nodes can import them by name.
"""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import eventually
from etcd_fixture import EtcdServer, etcd_binary

from ergo_py import act, gen, net
from ergo_py.testing import Cluster, free_port

TTL = 2  # seconds: short, so a killed node goes quickly
WAIT = 15.0  # seconds any expected event may take (children share 2 cores)


class Echo(act.Actor):
    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return ("echo", request)


class Watcher(act.Actor):
    """Links to what it is told (trapping exits) and reports what it received."""

    trap_exit = True

    def init(self) -> None:
        self.received: list[Any] = []

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.received.append(message)

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        match request:
            case ("link", target):
                self.link(target)
                return None
            case ("call", target, inner):
                return self.call(target, inner)
            case "received":
                return [repr(m) for m in self.received]
        return None


def keys(endpoint: str, prefix: str) -> list[str]:
    """The keys under ``prefix`` in etcd (straight from the gateway)."""
    raw = prefix.encode()
    body = {
        "key": base64.b64encode(raw).decode(),
        "range_end": base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode(),
    }
    request = urllib.request.Request(endpoint + "/v3/kv/range", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=2.0) as r:
        reply = json.loads(r.read())
    return sorted(base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs") or [])


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(etcd_binary())
    server.start()
    yield server
    server.close()


_clusters = iter(range(10**6))


def cluster_name() -> str:
    return f"t{next(_clusters)}-{time.monotonic_ns()}"


def connection_ids(cluster: Cluster) -> dict[tuple[str, str], Any]:
    """Each node's connection to each other node, by connection id."""
    return {
        (a, b): cluster[a].network().info(b)["connection_id"]
        for a in cluster.nodes
        for b in cluster.nodes
        if a != b
    }


def start_node(
    cluster: Cluster, name: str, registrar: net.EtcdRegistrar, *, process: bool
) -> gen.Node:
    options = cluster.node_options(name)
    options.network.registrar = registrar
    return cluster.start(name, options, process=process)


# --- without etcd running ----------------------------------------------------------------


def test_it_fits_the_protocol_and_pickles_by_its_settings_unstarted() -> None:
    reg = net.EtcdRegistrar(["http://127.0.0.1:2379/"], cluster="c1", lease_ttl=3)
    assert isinstance(reg, net.Registrar)
    copy = pickle.loads(pickle.dumps(reg))
    assert isinstance(copy, net.EtcdRegistrar)
    assert (copy.endpoints, copy.cluster, copy.lease_ttl) == (["http://127.0.0.1:2379"], "c1", 3)
    assert copy.nodes() == []
    assert copy._instance != reg._instance  # a registrar of its own


@pytest.mark.parametrize(
    "kwargs",
    [{"endpoints": ["127.0.0.1:2379"]}, {"cluster": "a/b"}, {"lease_ttl": 0}, {"endpoints": []}],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(gen.ErrIncorrect):
        net.EtcdRegistrar(**kwargs)


def test_a_node_does_not_start_when_etcd_is_unreachable() -> None:
    reg = net.EtcdRegistrar([f"http://127.0.0.1:{free_port()}"], lease_ttl=TTL)
    with Cluster(names=[], start=False) as cluster:
        with pytest.raises(gen.NodeError, match="etcd unreachable"):
            start_node(cluster, "a@127.0.0.1", reg, process=False)
        assert cluster.nodes == {}


# --- against etcd, registrars alone -------------------------------------------------------


def test_register_resolve_list_and_withdraw(etcd: EtcdServer) -> None:
    cluster = cluster_name()
    route = gen.Route(host="10.0.0.1", port=4000, tls=True)

    async def scenario() -> None:
        a = net.EtcdRegistrar([etcd.endpoint], cluster=cluster, lease_ttl=TTL)
        b = net.EtcdRegistrar([etcd.endpoint], cluster=cluster, lease_ttl=TTL)
        other = net.EtcdRegistrar([etcd.endpoint], cluster=cluster + "x", lease_ttl=TTL)
        try:
            await a.start("a@h1", [route])
            with pytest.raises(gen.ErrTaken):
                await b.start("a@h1", [route])
            assert await b.resolve("a@h1") == [route]
            with pytest.raises(gen.ErrNoRoute):
                await other.resolve("a@h1")  # another cluster
            with pytest.raises(gen.ErrNoRoute):
                await b.resolve("nobody@h1")
            deadline = time.monotonic() + WAIT
            while b.nodes() != ["a@h1"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert b.nodes() == ["a@h1"]
            await a.close()
            deadline = time.monotonic() + WAIT
            while b.nodes() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert b.nodes() == []  # revoked at once, not after the TTL
            assert keys(etcd.endpoint, f"/ergo/{cluster}/") == []
        finally:
            for r in (a, b, other):
                await r.close()

    asyncio.run(scenario())


def test_a_lost_lease_is_replaced_and_the_node_registered_again(etcd: EtcdServer) -> None:
    cluster = cluster_name()
    route = gen.Route(host="", port=4001)

    async def scenario() -> None:
        reg = net.EtcdRegistrar([etcd.endpoint], cluster=cluster, lease_ttl=TTL)
        try:
            await reg.start("a@h1", [route])
            old = reg._lease
            body = json.dumps({"ID": str(old)}).encode()
            request = urllib.request.Request(etcd.endpoint + "/v3/lease/revoke", data=body)
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=2.0)
            deadline = time.monotonic() + TTL + WAIT
            while time.monotonic() < deadline:
                if reg._lease != old and await asyncio.to_thread(
                    keys, etcd.endpoint, f"/ergo/{cluster}/"
                ):
                    break
                await asyncio.sleep(0.1)
            assert reg._lease != old
            assert await reg.resolve("a@h1") == [route]
        finally:
            await reg.close()

    asyncio.run(scenario())


# --- against etcd, nodes in processes -----------------------------------------------------

NAMES = [f"e{i}@127.0.0.1" for i in range(1, 4)]


@pytest.mark.slow
def test_three_process_nodes_meet_through_etcd_and_a_killed_one_goes(etcd: EtcdServer) -> None:
    name = cluster_name()
    with Cluster(names=[], start=False) as cluster:
        for node_name in NAMES:
            reg = net.EtcdRegistrar([etcd.endpoint], cluster=name, lease_ttl=TTL)
            node = start_node(cluster, node_name, reg, process=True)
            node.spawn_register("echo", Echo)
        for node_name in NAMES:
            view = cluster[node_name].network().registrar()
            assert view is not None
            eventually(lambda v=view: v.nodes() == NAMES, WAIT, f"{node_name} sees all")
        # no embedded registrar, no static routes: etcd told them where to dial
        with pytest.raises(OSError):
            import socket

            socket.create_connection(("127.0.0.1", cluster.registrar_port), 0.5).close()
        for a in NAMES:
            for b in NAMES:
                if a != b:
                    assert cluster[a].call(gen.ProcessID("echo", b), a) == ("echo", a)
        assert len(connection_ids(cluster)) == 6

        # e1 and e2 link to a process on e3; e3 is SIGKILLed
        victim = NAMES[2]
        target = cluster[victim].spawn(Echo)
        watchers = {}
        for a in NAMES[:2]:
            watchers[a] = cluster[a].spawn(Watcher)
            cluster[a].call(watchers[a], ("link", target))
        cluster.kill(victim)
        killed = time.monotonic()
        for a in NAMES[:2]:
            view = cluster[a].network().registrar()
            assert view is not None
            eventually(lambda v=view: victim not in v.nodes(), TTL + 2.0, f"{victim} gone for {a}")
        assert time.monotonic() - killed <= TTL + 2.0 + 0.5
        assert keys(etcd.endpoint, f"/ergo/{name}/") == sorted(
            f"/ergo/{name}/nodes/{n}" for n in NAMES[:2]
        )
        for a in NAMES[:2]:
            eventually(
                lambda a=a: any(str(target) in m for m in cluster[a].call(watchers[a], "received")),
                WAIT,
                f"exit of the linked process on {a}",
            )
        assert cluster[NAMES[0]].call(gen.ProcessID("echo", NAMES[1]), 1) == ("echo", 1)


@pytest.mark.slow
def test_an_etcd_outage_drops_no_connection_and_nodes_register_again() -> None:
    server = EtcdServer(etcd_binary())
    server.start()
    name = cluster_name()
    try:
        with Cluster(names=[], start=False) as cluster:
            for node_name in NAMES:
                reg = net.EtcdRegistrar([server.endpoint], cluster=name, lease_ttl=TTL)
                start_node(cluster, node_name, reg, process=True).spawn_register("echo", Echo)
            for a in NAMES:
                for b in NAMES:
                    if a != b:
                        assert cluster[a].call(gen.ProcessID("echo", b), 0) == ("echo", 0)
            expected = sorted(f"/ergo/{name}/nodes/{n}" for n in NAMES)
            assert keys(server.endpoint, f"/ergo/{name}/") == expected
            before = connection_ids(cluster)

            server.stop()
            time.sleep(TTL + 2.0)  # longer than a lease
            for a in NAMES:  # connections carry on; cached routes are kept
                for b in NAMES:
                    if a != b:
                        assert cluster[a].call(gen.ProcessID("echo", b), 1) == ("echo", 1)
                view = cluster[a].network().registrar()
                assert view is not None
                assert view.nodes() == NAMES
            server.start()

            eventually(
                lambda: keys(server.endpoint, f"/ergo/{name}/") == expected,
                WAIT,
                "registered again",
            )
            time.sleep(TTL + 1.0)  # still registered a lease later: the keep-alive runs
            assert keys(server.endpoint, f"/ergo/{name}/") == expected
            assert connection_ids(cluster) == before  # not one connection was made again
    finally:
        server.close()


def test_while_etcd_is_away_cached_routes_answer_and_loss_and_return_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = EtcdServer(etcd_binary())
    server.start()
    cluster = cluster_name()
    route = gen.Route(host="", port=4002)
    caplog.set_level("WARNING", logger="ergo_py.net.registrar.etcd")

    async def until(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not check():
            if time.monotonic() > deadline:
                pytest.fail(f"not within {WAIT} s: {what}")
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        a = net.EtcdRegistrar([server.endpoint], cluster=cluster, lease_ttl=TTL)
        b = net.EtcdRegistrar([server.endpoint], cluster=cluster, lease_ttl=TTL)
        try:
            await a.start("a@h1", [route])
            # b never starts (a hidden node's): its watch begins with its first resolve
            assert await b.resolve("a@h1") == [route]
            await until(lambda: b.nodes() == ["a@h1"], "b sees a")
            await asyncio.to_thread(server.stop)
            assert await b.resolve("a@h1") == [route]  # from the cache
            with pytest.raises(gen.ErrNoConnection):
                await b.resolve("nobody@h1")
            await until(lambda: "lost" in caplog.text, "the loss logged")
            assert b.nodes() == ["a@h1"]
            await asyncio.to_thread(server.start)
            await until(lambda: "back after" in caplog.text, "the return logged")
            assert await b.resolve("a@h1") == [route]
        finally:
            await a.close()
            await b.close()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
