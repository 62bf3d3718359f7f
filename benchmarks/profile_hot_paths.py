"""Where the time goes: py-spy profiles of the one-way and call hot paths.

Node b (the receiver / callee) runs in this process, node a (the sender /
caller) in a child process, over mutual TLS on loopback. While each load
runs, py-spy samples both processes and this prints, per process, the share
of samples per thread and the functions with the most samples of their own.

Samples are native (C frames of uvloop, OpenSSL and msgpack too) and taken
only from the thread holding the GIL (``--gil``): what is left is the work
that serialises a process, without the threads idling in ``epoll`` or waiting
for a lock. With ``--svg DIR`` it also draws each process's flame graph
(``flame.py``) as ``DIR/flame-KIND-SIDE.svg``.

``setup`` profiles connection set-ups (``disconnect``, then a call that dials).

Run: ``python benchmarks/profile_hot_paths.py [oneway|call|setup] [seconds] [--svg DIR]``
(``make bench`` installs py-spy with the ``bench`` extra).
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flame
import node_network

import ergo_py
from ergo_py import gen
from ergo_py.lib import CertificateAuthority
from ergo_py.testing import Echo

HOST = "127.0.0.1"


def _client(pem: tuple[bytes, bytes], port: int, kind: str, seconds: float, ready: Any) -> None:
    options = node_network._options(pem, f"a@{HOST}", 3)
    with ergo_py.start_node(f"a@{HOST}", options) as a:
        a.network().add_route(f"b@{HOST}", gen.NetworkRoute(host=HOST, port=port, tls=True))
        target = gen.ProcessID("sink" if kind == "oneway" else "pong", f"b@{HOST}")
        a.call(target, 0)
        ready.set()
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            if kind == "oneway":
                for i in range(1000):
                    a.send(target, ("m", i, b"x" * 32))
                n += 1000
            elif kind == "setup":  # scenarios.setups: close, then one call that dials
                a.network().disconnect(f"b@{HOST}")
                a.call(target, n)
                n += 1
            else:
                a.call(target, n)
                n += 1
        if kind == "oneway":
            a.call(target, "count", timeout=60)  # everything sent has been handled
        what = {"oneway": "messages", "call": "calls", "setup": "set-ups"}[kind]
        print(f"client: {n:,} {what} in {seconds:.0f} s")


def _record(pid: int, seconds: float, out: Path, fmt: str = "raw") -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [py_spy, "record", "-p", str(pid), "-r", "200", "-d", str(int(seconds))]
    # --native: the loop thread's time is partly in C (uvloop, OpenSSL); --threads
    # keeps each thread its own tower; --gil drops idle and lock-waiting threads.
    cmd += ["-f", fmt, "-o", str(out), "--native", "--threads", "--gil"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)


def _summary(title: str, raw: Path, top: int = 15) -> None:
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        threads[frames[0].split(" (")[0]] += n
        leaf = frames[-1]
        name, _, where = leaf.partition(" (")
        own[f"{name} ({where.rsplit('/', 1)[-1]}"] += n
    print(f"\n{title}: {total} samples")
    for name, n in threads.most_common(5):
        print(f"  thread {n / total:6.1%}  {name or '(idle)'}")
    for name, n in own.most_common(top):
        print(f"  {n / total:6.1%}  {name}")


def main(argv: list[str]) -> int:
    svg_dir: Path | None = None
    if "--svg" in argv:
        i = argv.index("--svg")
        svg_dir = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    kind = argv[0] if argv else "oneway"
    seconds = float(argv[1]) if len(argv) > 1 else 6.0
    if kind not in ("oneway", "call", "setup"):
        print(
            "usage: profile_hot_paths.py [oneway|call|setup] [seconds] [--svg DIR]",
            file=sys.stderr,
        )
        return 2
    pem = CertificateAuthority.create("profile CA").to_pem()
    options = node_network._options(pem, f"b@{HOST}", 3)
    with ergo_py.start_node(f"b@{HOST}", options) as b, tempfile.TemporaryDirectory() as tmp:
        b.spawn_register("sink", node_network.Sink)
        b.spawn_register("pong", Echo)
        port = b.network().acceptors()[0].port
        ready = mp.get_context("spawn").Event()
        client = mp.get_context("spawn").Process(
            target=_client, args=(pem, port, kind, seconds + 2, ready)
        )
        client.start()
        try:
            if not ready.wait(30):
                print("the client did not connect", file=sys.stderr)
                return 1
            time.sleep(0.5)
            assert client.pid is not None
            server_raw, client_raw = Path(tmp, "server.txt"), Path(tmp, "client.txt")
            recorders = [
                _record(os.getpid(), seconds, server_raw),
                _record(client.pid, seconds, client_raw),
            ]
            for r in recorders:
                r.wait(seconds + 30)
            client.join(seconds + 60)
            sides = (("node b (receiver)", "b", server_raw), ("node a (sender)", "a", client_raw))
            for title, side, raw in sides:
                if raw.exists():
                    _summary(title, raw)
                    if svg_dir is not None:
                        out = svg_dir / f"flame-{kind}-{side}.svg"
                        flame.render(flame.read_collapsed(raw), f"{kind}: {title}", out)
                        print(f"  wrote {out}")
                else:
                    print(f"\n{title}: no profile (is py-spy installed, may it ptrace?)")
        finally:
            if client.is_alive():
                client.kill()
                client.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
