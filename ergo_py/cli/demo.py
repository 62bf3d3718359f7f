"""``ergo-py demo``: a three-node mTLS cluster whose certificates rotate while it works.

Three nodes on loopback, each with a ``CertAuthManager`` and a certificate from
a development CA, call each other's ``pong`` process without pause. Meanwhile
the demo rotates every node's certificate several times, rotates the CA itself
through the overlap procedure (trust old + new, re-issue, drop old), and
tightens client authentication from "verify if given" to "require". After
each change the changed node moves its live connections onto the new
settings (``network.reconnect``: a gap-free hand-over that actors do not
see). It ends with a summary: calls made and failed, rotations, and which
certificate each connection ended on. No call may fail.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import click
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ergo_py import gen
from ergo_py.testing import Cluster, Pong

NAMES = ("a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1")


@click.command("demo")
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Certificate rotations per node.",
)
def command(rounds: int) -> None:
    """A 3-node mTLS cluster whose certificates rotate while it works (exit 1 if a call failed)."""
    status = run(rounds)
    if status:
        raise SystemExit(status)


class _Callers:
    """One thread per ordered pair of nodes, calling until told to stop."""

    def __init__(self, nodes: dict[str, gen.Node]) -> None:
        self.stats: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(nodes[src], dst), daemon=True)
            for src, dst in itertools.permutations(nodes, 2)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _loop(self, node: gen.Node, dst: str) -> None:
        target = gen.ProcessID("pong", dst)
        for i in itertools.count():
            if self._stop.is_set():
                return
            try:
                reply = node.call(target, i, timeout=10)
                ok = reply == ("pong", i)
                with self._lock:
                    self.stats["ok" if ok else "wrong"] += 1
            except gen.ErgoError as exc:
                with self._lock:
                    self.stats["failed"] += 1
                    self.errors[type(exc).__name__] += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def _view(callers: _Callers, managers: dict[str, gen.CertAuthManager]) -> Table:
    """The live view: calls so far, and each node's certificate right now."""
    with callers._lock:
        ok, failed = callers.stats["ok"], callers.stats["failed"] + callers.stats["wrong"]
    table = Table(
        title=f"calls answered {ok}, failed {failed}", title_justify="left", box=box.SIMPLE_HEAD
    )
    for col in ("node", "cert version", "fingerprint", "client auth", "trusted CAs"):
        table.add_column(col)
    for name, cam in managers.items():
        state = cam.state()
        pool = state.client_cas.fingerprints if state.client_cas is not None else ()
        table.add_row(
            name,
            str(state.version),
            state.certificate.fingerprint[:12],
            state.client_auth.name.lower().replace("_client_cert", ""),
            ", ".join(fp[:8] for fp in pool),
        )
    return table


def run(rounds: int = 3) -> int:
    """Run the demo; returns 0 when every call was answered correctly.

    On a terminal a live table (rich) shows the calls and every node's
    certificate as they change; into a pipe only the running commentary.
    """
    cluster = Cluster(names=NAMES, cookie="demo")  # mTLS on, client certs required
    managers, nodes = cluster.managers, cluster.nodes
    live: Live | None = None
    try:
        for name in NAMES:
            # Start lenient so that tightening it later is part of the show.
            managers[name].set_client_auth(gen.ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN)
            nodes[name].spawn_register("pong", Pong)
        callers = _Callers(nodes)
        callers.start()
        console = Console()
        if console.is_terminal:
            live = Live(
                get_renderable=lambda: _view(callers, managers),
                console=console,
                refresh_per_second=4,
            )
            live.start()
        print(f"3 nodes up on mTLS: {', '.join(NAMES)}; 6 callers running")
        changes = 0

        def settle(what: str, *changed: str) -> None:
            nonlocal changes
            changes += 1
            time.sleep(0.2)
            for name in changed or NAMES:
                cluster.reconnect_all(name)  # gap-free: callers never notice
            print(f"  {what}; connections of {', '.join(changed) or 'every node'} renewed")

        print("rotating every node's certificate")
        for r in range(rounds):
            for name in NAMES:
                cluster.rotate(name)
                settle(f"round {r + 1}: {name} on cert version {managers[name].version}", name)

        print("rotating the CA: trust CA1 + CA2, re-issue from CA2, drop CA1")
        cluster.rotate_ca(settle, common_name="ergo_py demo CA 2")

        print("tightening client auth to REQUIRE_AND_VERIFY_CLIENT_CERT")
        for cam in managers.values():
            cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
        settle("client certificates now required")

        time.sleep(0.5)
        callers.stop()
        if live is not None:
            live.stop()
            live = None
        print()
        print("summary")
        stats = callers.stats
        print(f"  calls answered correctly:        {stats['ok']}")
        print(f"  calls failed or answered wrong:  {stats['failed'] + stats['wrong']}")
        for kind, n in callers.errors.items():
            print(f"    {kind}: {n}")
        print(f"  certificate and trust changes:   {changes}")
        print("  connections at the end (local cert version / peer certificate):")
        for name in NAMES:
            for peer in nodes[name].network().nodes():
                info = nodes[name].network().info(peer)
                print(
                    f"    {name} -> {peer}: v{info['local_cert_version']}"
                    f" / {str(info['peer_cert_fingerprint'])[:16]}"
                    f" (identity verified: {info['identity_verified']})"
                )
        ok = stats["failed"] == 0 and stats["wrong"] == 0 and stats["ok"] > 0
        print("demo", "passed" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        if live is not None:
            live.stop()
        cluster.close()
