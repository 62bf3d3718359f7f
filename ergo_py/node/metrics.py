"""Prometheus metrics of one node, collected on scrape, and the ASGI app serving them.

Nothing here runs per message: the collector reads, when scraped, what the
node keeps anyway (each link's message and byte counts, the call table's
size, the observer's handshake and certificate counters, the certificates
themselves). Each node has its own ``CollectorRegistry``, so several nodes in
one process never collide. Needs ``prometheus-client`` (the ``metrics`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ergo_py.gen.events import Health
from ergo_py.node.asgi import NOT_FOUND, PLAIN, Reply, path_app
from ergo_py.node.observe import HANDSHAKE_BUCKETS, Observer

if TYPE_CHECKING:
    from ergo_py.gen.certmanager import CertManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector(Collector):
    """Reads one node's state on each scrape."""

    def __init__(
        self,
        observer: Observer,
        pending_calls: Callable[[], int],
        managers: Callable[[], dict[str, CertManager]],
    ) -> None:
        self._obs = observer
        self._pending = pending_calls
        self._managers = managers

    def collect(self) -> Iterator[Metric]:
        obs = self._obs
        now = datetime.now(UTC)

        expiry = GaugeMetricFamily(
            "ergo_cert_expiry_seconds",
            "Seconds until the certificate expires (negative: expired)",
            labels=["manager", "fingerprint"],
        )
        for label, manager in self._managers().items():
            cert = manager.get_certificate()
            expiry.add_metric([label, cert.fingerprint], (cert.not_after - now).total_seconds())
        yield expiry

        peer_expiry = GaugeMetricFamily(
            "ergo_peer_cert_expiry_seconds",
            "Seconds until a connected peer's certificate expires",
            labels=["peer", "fingerprint"],
        )
        updates = CounterMetricFamily(
            "ergo_cert_updates", "Certificate manager changes", labels=["result"]
        )
        for result in ("ok", "rejected"):
            updates.add_metric([result], obs.cert_updates.get(result, 0))
        yield updates

        rejections = CounterMetricFamily(
            "ergo_cert_rejections",
            "Certificate manager changes refused, by the check that refused them",
            labels=["check"],
        )
        for check, n in sorted(obs.cert_rejections.copy().items()):
            rejections.add_metric([check], n)
        yield rejections

        retired = CounterMetricFamily(
            "ergo_retired_connections",
            "Connections on retired material (our cert, the peer's CA, its expiry), by action",
            labels=["action", "reason"],
        )
        if obs.trust is not None:
            for (action, kind), n in sorted(obs.trust.counts.copy().items()):
                retired.add_metric([action, kind], n)
        yield retired

        handshakes = CounterMetricFamily(
            "ergo_handshakes", "Link handshakes (TLS and Ergo)", labels=["side", "result", "reason"]
        )
        for (side, result, reason), n in sorted(obs.handshakes.copy().items()):
            handshakes.add_metric([side, result, reason], n)
        yield handshakes

        buckets: list[tuple[str, float]] = []
        cumulative = 0
        counts = list(obs.handshake_buckets)
        for bound, n in zip(HANDSHAKE_BUCKETS, counts, strict=False):
            cumulative += n
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", cumulative + counts[-1]))
        hist = HistogramMetricFamily(
            "ergo_handshake_duration_seconds", "Link handshake duration (connect to up or failure)"
        )
        hist.add_metric([], buckets, obs.handshake_sum)
        yield hist

        connections = GaugeMetricFamily(
            "ergo_connections",
            "Current connections, by peer and our certificate version they use",
            labels=["peer", "cert_version"],
        )
        messages = dict(obs.closed_messages)
        nbytes = dict(obs.closed_bytes)
        net = obs.network
        if net is not None:
            for peer, conn in net.current_connections().items():
                link = conn.links[0] if conn.links else None
                tls = link.tls if link is not None else None
                version = tls.local_state.version if tls and tls.local_state else ""
                connections.add_metric([peer, str(version)], 1)
                if tls is not None and tls.peer is not None:
                    left = (tls.peer.not_after - now).total_seconds()
                    peer_expiry.add_metric([peer, tls.peer.fingerprint], left)
            for link in net.live_links():
                messages["in"] += link.messages_in
                messages["out"] += link.messages_out
                nbytes["in"] += link.bytes_in
                writer = link.writer
                nbytes["out"] += writer.bytes_out if writer is not None else 0
        yield connections
        yield peer_expiry

        msg = CounterMetricFamily(
            "ergo_messages", "Frames to and from other nodes", labels=["direction"]
        )
        byt = CounterMetricFamily(
            "ergo_bytes", "Bytes to and from other nodes", labels=["direction"]
        )
        for direction in ("in", "out"):
            msg.add_metric([direction], messages[direction])
            byt.add_metric([direction], nbytes[direction])
        yield msg
        yield byt

        yield GaugeMetricFamily(
            "ergo_pending_calls", "Calls from this node waiting for their reply", self._pending()
        )


def make_registry(collector: NodeCollector) -> CollectorRegistry:
    """A registry of the node's own (never the process-wide default)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def make_app(
    registry: CollectorRegistry, health: Callable[[], Health], alive: Callable[[], bool]
) -> Any:
    """An ASGI 3 app: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (``node.health()``)."""

    async def handle(path: str) -> Reply:
        if path == "/metrics":
            return 200, CONTENT_TYPE, generate_latest(registry)
        if path == "/healthz":
            ok = alive()
            return (200 if ok else 503), PLAIN, b"ok\n" if ok else b"stopping\n"
        if path == "/readyz":
            h = health()
            body = json.dumps({"ready": h.ready, "reasons": h.reasons}).encode()
            return (200 if h.ready else 503), "application/json", body
        return NOT_FOUND

    return path_app(handle)
