"""Cluster-wide trust through etcd: ``/ergo/CLUSTER/trust`` followed into the nodes' managers.

A real etcd (etcd_fixture.py; skipped without the binary). Whether a node
uses a pool is judged by handshakes: ``network().reconnect`` makes a new
connection with both sides' current settings, and raises
``gen.ErrNoConnection`` (the old connection carrying on) when one side
refuses the other's certificate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import time
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import eventually
from etcd_fixture import EtcdServer, etcd_binary

from ergo_py import gen, net
from ergo_py.lib import CertificateAuthority
from ergo_py.net.registrar.etcd_trust import check_trust_bundle
from ergo_py.testing import Cluster, Pong

TTL = 3
WAIT = 15.0  # seconds any expected event may take (children share 2 cores)
HOST = "127.0.0.1"


def put_raw(endpoint: str, key: str, value: bytes) -> None:
    """Put any bytes under ``key``, past ``publish_trust``'s checks."""
    body = {
        "key": base64.b64encode(key.encode()).decode(),
        "value": base64.b64encode(value).decode(),
    }
    request = urllib.request.Request(endpoint + "/v3/kv/put", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=2.0) as r:
        r.read()


def reconnects(cluster: Cluster, a: str, b: str) -> bool:
    """True if ``a`` could move its connection to ``b`` onto a new handshake."""
    try:
        cluster[a].network().reconnect(b)
    except gen.ErrNoConnection:
        return False
    return True


def both(*cas: CertificateAuthority) -> gen.CertPool:
    pool = gen.CertPool()
    for ca in cas:
        for cert in ca.pool().certificates:
            pool.add(cert)
    return pool


_clusters = iter(range(10**6))


def cluster_name() -> str:
    return f"trust{next(_clusters)}-{time.monotonic_ns()}"


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(etcd_binary())
    server.start()
    yield server
    server.close()


def start_nodes(
    cluster: Cluster, names: list[str], endpoint: str, name: str, *, process: bool
) -> None:
    for node_name in names:
        options = cluster.node_options(node_name)
        assert isinstance(options.cert_manager, gen.CertAuthManager)
        options.network.registrar = net.EtcdRegistrar(
            [endpoint], cluster=name, lease_ttl=TTL, trust=options.cert_manager
        )
        cluster.start(node_name, options, process=process).spawn_register("echo", Pong)
    for a in names:
        for b in names:
            if a != b:
                assert cluster[a].call(gen.ProcessID("echo", b), 0) == ("pong", 0)


# --- without etcd ---------------------------------------------------------------------------


def test_bundle_checks_name_why() -> None:
    ca, other = CertificateAuthority.create("ca"), CertificateAuthority.create("other")
    cert = ca.issue("n@127.0.0.1", hosts=(HOST,))
    assert check_trust_bundle(both(other, ca).to_pem(), cert) == both(ca, other)
    with pytest.raises(gen.CertificateError, match="empty"):
        check_trust_bundle(" \n", cert)
    with pytest.raises(gen.CertificateError, match="does not parse"):
        check_trust_bundle("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    with pytest.raises(gen.CertificateError, match="strand"):
        check_trust_bundle(other.pool().to_pem(), cert)
    # same name, another key: not the issuer
    impostor = CertificateAuthority.create("ca")
    with pytest.raises(gen.CertificateError, match="strand"):
        check_trust_bundle(impostor.pool().to_pem(), cert)
    with pytest.raises(gen.ErrIncorrect):
        net.publish_trust(["http://127.0.0.1:1"], "c", gen.CertPool())


def test_a_trust_following_registrar_pickles_unbound_and_refuses_to_start_so() -> None:
    ca = CertificateAuthority.create("ca")
    cam = gen.create_cert_auth_manager(ca.issue("n@127.0.0.1", hosts=(HOST,)))
    reg = net.EtcdRegistrar(["http://127.0.0.1:1"], cluster="c", trust=cam)
    copy = pickle.loads(pickle.dumps(reg))
    assert copy.trust is True and copy._trust_cam is None
    assert pickle.loads(pickle.dumps(net.EtcdRegistrar(["http://127.0.0.1:1"]))).trust is False
    with pytest.raises(gen.NodeError, match="bind_cert_manager"):
        asyncio.run(copy.start("n@127.0.0.1", []))
    copy.bind_cert_manager(cam)
    assert copy._trust_cam is cam
    with pytest.raises(gen.ErrIncorrect):
        net.EtcdRegistrar(["http://127.0.0.1:1"], trust="yes")  # type: ignore[arg-type]


# --- against etcd -------------------------------------------------------------------------


def test_bad_bundles_are_refused_and_the_nodes_keep_their_pool(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = cluster_name()
    key = f"/ergo/{name}/trust"
    names = ["ta@127.0.0.1", "tb@127.0.0.1"]
    caplog.set_level("INFO", logger="ergo_py.net.registrar.etcd_trust")
    with Cluster(names=[], start=False) as cluster:
        start_nodes(cluster, names, etcd.endpoint, name, process=False)
        original = cluster.ca.pool()
        stranger = CertificateAuthority.create("a stranger CA")
        bad = [
            (b"not a PEM bundle at all", "does not parse"),
            (b"", "empty"),
            (stranger.pool().to_pem().encode(), "strand"),
        ]
        for value, why in bad:
            put_raw(etcd.endpoint, key, value)
            eventually(
                lambda why=why: caplog.text.count(why) >= len(names),
                WAIT,
                f"every node refuses the bundle ({why})",
            )
        assert caplog.text.count("refused the CA bundle") == len(names) * len(bad)
        for node_name in names:
            assert cluster.managers[node_name].client_cas() == original
            assert cluster.managers[node_name].root_cas() == original
        assert reconnects(cluster, names[0], names[1])
        assert reconnects(cluster, names[1], names[0])

        # a good one after them is taken
        net.publish_trust([etcd.endpoint], name, both(cluster.ca, stranger))
        for node_name in names:
            eventually(
                lambda n=node_name: cluster.managers[n].root_cas() == both(cluster.ca, stranger),
                WAIT,
                f"{node_name} takes the good bundle",
            )
        assert cluster.managers[names[0]].client_cas() == both(cluster.ca, stranger)


def test_a_node_reads_the_published_trust_at_start(etcd: EtcdServer) -> None:
    name = cluster_name()
    with Cluster(names=[], start=False) as cluster:
        extra = CertificateAuthority.create("extra CA")
        net.publish_trust(etcd.endpoint, name, both(cluster.ca, extra))
        start_nodes(cluster, ["ts@127.0.0.1"], etcd.endpoint, name, process=False)
        assert cluster.managers["ts@127.0.0.1"].root_cas() == both(cluster.ca, extra)


@pytest.mark.slow
def test_a_ca_rotation_for_the_whole_cluster_is_one_put_per_step(etcd: EtcdServer) -> None:
    name = cluster_name()
    names = [f"tr{i}@127.0.0.1" for i in range(1, 4)]
    with Cluster(names=[], start=False) as cluster:
        start_nodes(cluster, names, etcd.endpoint, name, process=True)
        first, old = names[0], cluster.ca
        new = CertificateAuthority.create("the new cluster CA")

        # a certificate from the new CA: nobody trusts it yet, so its manager refuses it
        with pytest.raises(gen.CertValidationError, match="chain"):
            cluster.managers[first].update(new.issue(first, hosts=(HOST,)))
        assert reconnects(cluster, first, names[1])  # still on the old one

        # step 1: one put, every node trusts old and new
        net.publish_trust([etcd.endpoint], name, both(old, new))

        # step 2: every node gets a certificate from the new CA (not through etcd). The
        # parent-side manager validates it against its own pools, which etcd does not feed:
        # it is told the pools the children already took from etcd along with it.
        for node_name in names:
            cluster.managers[node_name].update_all(
                new.issue(node_name, hosts=(HOST,)),
                client_cas=both(old, new),
                root_cas=both(old, new),
            )
        for peer in names[1:]:
            eventually(lambda p=peer: reconnects(cluster, first, p), WAIT, f"{first} -> {peer}")
            eventually(lambda p=peer: reconnects(cluster, p, first), WAIT, f"{peer} -> {first}")
        for a in names:
            for b in names:
                if a != b:
                    assert reconnects(cluster, a, b), f"{a} -> {b}"

        # a node that keeps its old-CA certificate (in this process: its manager is the real one)
        late = "tl@127.0.0.1"
        start_nodes(cluster, [late], etcd.endpoint, name, process=False)
        assert cluster.managers[late].root_cas() == both(old, new)  # read at its start
        for peer in names:
            assert cluster[late].call(gen.ProcessID("echo", peer), 2) == ("pong", 2)

        # step 3: one put drops the old CA; the late node refuses it (it would strand it)
        net.publish_trust([etcd.endpoint], name, new.pool())
        for peer in names:
            eventually(
                lambda p=peer: not reconnects(cluster, late, p), WAIT, f"{peer} drops the old CA"
            )
        assert cluster.managers[late].root_cas() == both(old, new)
        for a in names:
            for b in names:
                if a != b:
                    assert reconnects(cluster, a, b), f"{a} -> {b}"
                    assert cluster[a].call(gen.ProcessID("echo", b), 1) == ("pong", 1)
