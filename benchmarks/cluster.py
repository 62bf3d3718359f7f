"""The scale scenario: 16 nodes, full mesh, traffic through every rotation, one crash.

``make bench-cluster`` runs it (``python benchmarks/cluster.py --help`` for
the knobs); ``tests/test_cluster_scale.py`` runs a shorter one. Steps:

1. 16 process nodes (each in a network namespace of its own where they can
   be made: root and iproute2; on loopback otherwise), mutual TLS from one
   test CA; every pair connected (120 connections).
2. Continuous traffic (:mod:`ergo_py.testing.traffic`): on every node an
   actor calls and sends sequenced messages to random peers, each send
   accounted for by a later check.
3. Every node's certificate rotated, all at once: each node takes its new
   certificate and moves every connection it has onto it (``reconnect``).
   Timed until every link of every connection presents the new ones.
4. The CA rotated with overlap (``Cluster.rotate_ca``): all trust old and
   new; nodes re-issued from the new CA one by one, every connection moved
   when half of them are (old-CA and new-CA nodes meet) and again once the
   old CA is dropped. Timed the same way.
5. One node SIGKILLed and started again (new process, same name and address).
6. Everything checked once more; figures printed.

It prints messages sent / delivered / failed with an error / gone with the
killed node / lost (lost must be 0: the command exits 1 otherwise), the
two rotation times and call latency (p50, p99) before vs during rotation.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ergo_py.gen.errors import ErgoError, ErrTimeout
from ergo_py.testing import Cluster
from ergo_py.testing.netns import unavailable
from ergo_py.testing.traffic import RECEIVER, Receiver, Traffic, total

FINISH_TIMEOUT = 180.0  # a Traffic actor's last checks, each bounded by its call timeout
ON_NEW_TIMEOUT = 120.0


@dataclasses.dataclass
class Settings:
    nodes: int = 16
    before: float = 20.0  # seconds of traffic before the rotations
    after: float = 8.0  # seconds of traffic after the restart
    interval: float = 0.05  # each node's pause between two operations
    netns: bool | None = None  # None: where namespaces can be made
    seed: int = 18


@dataclasses.dataclass
class Report:
    mode: str
    nodes: int
    connections: int
    start_s: float
    figures: Counter[str]
    errors: Counter[str]
    reordered: int
    cert_rotation_s: float
    ca_rotation_s: float
    restart_s: float
    latency: dict[str, tuple[int, float, float]]  # phase -> (calls, p50, p99) in seconds

    @property
    def lost(self) -> int:
        return self.figures["lost"] + self.reordered

    def text(self) -> str:
        f = self.figures
        rows = [
            f"ergo_py scale scenario: {self.nodes} nodes ({self.mode}), full mesh "
            f"({self.connections} connections, up in {self.start_s:.1f} s)",
            f"messages sent       {f['sent']:>9}  ({f['calls']} calls, {f['sends']} sends)",
            f"delivered           {f['delivered']:>9}",
            f"failed with error   {f['failed']:>9}  {dict(self.errors) or ''}",
            f"gone with the node  {f['crashed']:>9}  (sends its killed incarnation took along)",
            f"lost                {self.lost:>9}  ({f['wrong_replies']} wrong replies, "
            f"{self.reordered} out of order; must be 0)",
            f"every certificate rotated, cluster on the new ones in {self.cert_rotation_s:.2f} s",
            f"CA rotated with overlap, cluster on the new CA in     {self.ca_rotation_s:.2f} s",
            f"one node killed and back, serving again in            {self.restart_s:.2f} s",
            "call latency        calls      p50 ms    p99 ms",
        ]
        for phase, (n, p50, p99) in self.latency.items():
            rows.append(f"  {phase:<16}{n:>8}  {p50 * 1e3:>9.1f} {p99 * 1e3:>9.1f}")
        return "\n".join(rows)


def _parallel(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 16) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(names, 2))


def _reconnect_all(cluster: Cluster) -> None:
    """Move every connection onto current settings (each pair once, from its first node)."""
    _parallel(lambda p: cluster.reconnect(p[0], p[1]), _pairs(list(cluster.nodes)))


def _off_new(cluster: Cluster) -> list[str]:
    """Links whose either end presents a certificate that is not its node's current one."""
    current = {n: cluster.managers[n].get_certificate().fingerprint for n in cluster.nodes}

    def stale(pair: tuple[str, str]) -> list[str]:
        a, b = pair
        try:
            info = cluster[a].network().info(b)
        except ErgoError as exc:
            return [f"{a}->{b}: {exc}"]
        return [
            f"{a}->{b} link {i}"
            for i, link in enumerate(info["links"])
            if (link["local_cert_fingerprint"], link["peer_cert_fingerprint"])
            != (current[a], current[b])
        ]

    pairs = [(a, b) for a in cluster.nodes for b in cluster.nodes if a != b]
    return [s for found in _parallel(stale, pairs) for s in found]


def _wait_on_new(cluster: Cluster, started: float) -> float:
    deadline = time.monotonic() + ON_NEW_TIMEOUT
    while stale := _off_new(cluster):
        if time.monotonic() > deadline:
            raise ErrTimeout(f"not on the new certificates: {stale[:5]} ...")
        time.sleep(0.1)
    return time.monotonic() - started


def _percentiles(values: list[float]) -> tuple[int, float, float]:
    if not values:
        return 0, float("nan"), float("nan")
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return len(ordered), pick(0.50), pick(0.99)


def run(settings: Settings, log: Callable[[str], None] = print) -> Report:
    use_netns = unavailable() is None if settings.netns is None else settings.netns
    mode = "a network namespace each" if use_netns else "processes on loopback"
    started = time.monotonic()
    with Cluster(settings.nodes, processes=True, netns=use_netns) as cluster:
        names = list(cluster.names)
        _parallel(lambda n: cluster[n].spawn_register(RECEIVER, Receiver), names)
        _parallel(lambda p: cluster.wait_connected(p[0], p[1], timeout=60), _pairs(names))
        start_s = time.monotonic() - started
        log(f"{len(names)} nodes up, full mesh, in {start_s:.1f} s ({mode})")

        def spawn_traffic(i_name: tuple[int, str]) -> Any:
            i, name = i_name
            args = (names, settings.interval, 10, 0.5, 5.0, settings.seed * 1000 + i)
            return cluster[name].spawn(Traffic, *args)

        traffic = dict(zip(names, _parallel(spawn_traffic, enumerate(names)), strict=True))
        t_begin = time.time()
        time.sleep(settings.before)

        t_rotation = time.time()
        t0 = time.monotonic()
        _parallel(lambda n: cluster.rotate(n, reconnect=True), names)
        cert_s = _wait_on_new(cluster, t0)
        log(f"every certificate rotated: cluster on the new ones in {cert_s:.2f} s")

        t0 = time.monotonic()
        half = names[len(names) // 2 - 1]

        def settle(step: str) -> None:
            if step.startswith(half) or step == "old CA dropped":
                _reconnect_all(cluster)

        cluster.rotate_ca(settle)
        ca_s = _wait_on_new(cluster, t0)
        t_rotation_end = time.time()
        log(f"CA rotated with overlap: cluster on the new CA in {ca_s:.2f} s")

        victim = names[-1]
        results = [cluster[victim].call(traffic[victim], "finish", FINISH_TIMEOUT)]
        t0 = time.monotonic()
        cluster.kill(victim)
        time.sleep(1.0)
        cluster.start(victim)
        cluster[victim].spawn_register(RECEIVER, Receiver)
        traffic[victim] = spawn_traffic((len(names), victim))
        for other in names[:-1]:
            with contextlib.suppress(ErgoError):  # as the others' traffic would
                cluster.wait_connected(victim, other, timeout=10)
        restart_s = time.monotonic() - t0
        log(f"{victim} killed and started again in {restart_s:.2f} s")
        time.sleep(settings.after)

        results += _parallel(lambda n: cluster[n].call(traffic[n], "finish", FINISH_TIMEOUT), names)
        reordered = sum(
            cluster[n].call(RECEIVER, ("stats",))["reordered"] for n in names
        )  # the restarted receiver's only: the killed one took its count along
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    samples = [s for r in results for s in r["samples"]]
    warm = t_begin + min(2.0, settings.before / 4)
    latency = {
        "before": _percentiles([lat for t, lat in samples if warm <= t < t_rotation]),
        "during rotation": _percentiles(
            [lat for t, lat in samples if t_rotation <= t <= t_rotation_end]
        ),
    }
    return Report(
        mode=mode,
        nodes=len(names),
        connections=len(_pairs(names)),
        start_s=start_s,
        figures=total(results),
        errors=errors,
        reordered=reordered,
        cert_rotation_s=cert_s,
        ca_rotation_s=ca_s,
        restart_s=restart_s,
        latency=latency,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Settings()
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--before", type=float, default=defaults.before, help="seconds")
    parser.add_argument("--after", type=float, default=defaults.after, help="seconds")
    parser.add_argument("--interval", type=float, default=defaults.interval, help="seconds")
    parser.add_argument("--loopback", action="store_true", help="no network namespaces")
    args = parser.parse_args(argv)
    # The nodes' processes log at the parent's level: a dial refused while
    # a node is down is expected here, not worth a warning line each.
    logging.getLogger().setLevel(logging.ERROR)
    settings = Settings(
        nodes=args.nodes,
        before=args.before,
        after=args.after,
        interval=args.interval,
        netns=False if args.loopback else None,
    )
    report = run(settings, log=lambda line: print(line, flush=True))
    print(report.text())
    return 0 if report.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
