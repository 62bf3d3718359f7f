"""Ray actors as a peer: calls/s (1 and 16 callers) and one-way messages/s.

Ray is what many Python users pick for distributed actors. Its driver (the
calling side) runs in a spawned process of its own, started for each
measurement and shut down after, so Ray's daemons (GCS, raylet, workers)
never run beside the other rows. The actor lives in a Ray worker process
(``ray.init`` of a local instance, local mode off): one process per side, as
for the others. 16 callers share one threaded actor (``max_concurrency=16``,
still one process), as ergo_py's 16 ``pong`` processes share node b.

TLS: Ray secures its gRPC channels with ``RAY_USE_TLS`` and certificate
*paths* (read by the GCS, the raylet and every worker, separate processes).
The key goes to a 0600 file on /dev/shm (memory, not disk), removed after the
run. Without ``ray`` installed (the ``bench`` extra installs it) the rows say
so and nothing fails.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

STARTUP_S = 60.0


def available() -> str | None:
    """None when Ray can be imported, else why not."""
    try:
        import ray  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class RayFigures:
    c1: float  # calls/s, 1 caller
    c16: float  # calls/s, 16 callers
    p50_us: float  # 1 caller
    one_way: float  # messages/s, one caller, fire-and-forget
    error: str = ""


def _tls_env(ca: Any, tmp: str) -> dict[str, str]:
    """One certificate for every Ray process, naming loopback and the address Ray picks."""
    from ray._private.services import get_node_ip_address

    def put(name: str, data: bytes) -> str:
        path = os.path.join(tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data)
        os.close(fd)
        return path

    hosts = tuple(dict.fromkeys(("127.0.0.1", get_node_ip_address())))
    cert, key = ca.issue("ray@bench", hosts=hosts).to_pem()
    return {
        "RAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": put("cert.pem", cert),
        "RAY_TLS_SERVER_KEY": put("key.pem", key),
        "RAY_TLS_CA_CERT": put("ca.pem", ca.pool().to_pem().encode()),
    }


def _driver(env: dict[str, str], call_s: float, messages: int, out: Any) -> None:
    os.environ.update(env)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file under ~/.ray
    import logging
    import statistics

    import ray
    import scenarios

    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )

        @ray.remote(max_concurrency=16)
        class Echo:
            def __init__(self) -> None:
                self.count = 0
                self.lock = threading.Lock()

            def echo(self, request: Any) -> Any:
                return request

            def sink(self, message: Any) -> None:
                with self.lock:
                    self.count += 1

            def reset(self) -> int:
                with self.lock:
                    n, self.count = self.count, 0
                return n

        actor = Echo.remote()  # type: ignore[attr-defined]
        for i in range(50):
            ray.get(actor.echo.remote(i))
        c1 = scenarios.timed_calls(lambda k, i: ray.get(actor.echo.remote(i)), 1, call_s)
        c16 = scenarios.timed_calls(lambda k, i: ray.get(actor.echo.remote(i)), 16, call_s)
        ray.get(actor.reset.remote())
        start = time.perf_counter()
        for _ in range(messages):
            actor.sink.remote(scenarios.MESSAGE)
        got = 0
        deadline = time.monotonic() + 120
        while got < messages and time.monotonic() < deadline:
            got += ray.get(actor.reset.remote())
        one_way = messages / (time.perf_counter() - start)
        if got != messages:
            raise RuntimeError(f"one-way: {got} of {messages} messages arrived")
        out.send(RayFigures(c1.per_s, c16.per_s, statistics.median(c1.samples_us), one_way))
    except Exception as exc:
        out.send(RayFigures(0, 0, 0, 0, f"{type(exc).__name__}: {exc}"))
    finally:
        ray.shutdown()


def measure(ca: Any, call_s: float, messages: int) -> RayFigures:
    """One round of Ray's figures (its own process; Ray started and stopped within).

    ``ca``: the bench's ``lib.CertificateAuthority``, which issues Ray's certificate.
    """
    why = available()
    if why is not None:
        return RayFigures(0, 0, 0, 0, f"ray not importable: {why}")
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="ergo-bench-ray-") as tmp:
        env = _tls_env(ca, tmp)
        proc = ctx.Process(target=_driver, args=(env, call_s, messages, send), daemon=True)
        proc.start()
        try:
            if not recv.poll(STARTUP_S + 2 * call_s + 120):
                return RayFigures(0, 0, 0, 0, "ray driver gave no answer in time")
            figures: RayFigures = recv.recv()
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
    return figures
