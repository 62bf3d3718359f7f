"""A Python node and a Go peer wired to each other over Ergo's protocol (shared by the tests).

The fixtures are imported by the test modules (a ``conftest.py`` here would
shadow ``tests/conftest.py``, which other tests import by that name); a
module overrides ``ergo_acceptor`` or ``go_args`` by defining its own.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from interop_peer import GoPeer, gopeer_binary

import ergo_py
from ergo_py import act, gen
from ergo_py.lib import CertificateAuthority

GO = "go@localhost"
PY = "py@localhost"
COOKIE = "interop-cookie"
HOSTS = ("localhost", "127.0.0.1")
WAIT = 10.0


@dataclass
class Pair:
    node: gen.Node
    peer: GoPeer
    ca: CertificateAuthority
    cam: gen.CertAuthManager
    key_dir: Path
    port: int  # the Python node's ergo acceptor

    def write_go_cert(self) -> str:
        """A fresh certificate for the Go node, into its files; its fingerprint."""
        cert = self.ca.issue(GO, hosts=HOSTS)
        pem, key = cert.to_pem()
        (self.key_dir / "go.crt").write_bytes(pem)
        (self.key_dir / "go.key").write_bytes(key)
        return cert.fingerprint

    def go_routes_to_python(self, cookie: str = "") -> None:
        assert self.peer.command(f"route {PY} 127.0.0.1 {self.port} {cookie}".strip()) == "ok route"


def start_pair(
    binary: Path,
    key_dir: Path,
    acceptor: gen.AcceptorOptions,
    go_args: tuple[str, ...] = (),
    flags: gen.NetworkFlags | None = None,
) -> Pair:
    """The Python node (acceptor ``acceptor``, network ``flags``) and a Go peer routed to it."""
    ca = CertificateAuthority.create("interop")
    cam = gen.create_cert_auth_manager(ca.issue(PY, hosts=HOSTS))
    cam.set_root_cas(ca.pool())
    options = gen.NodeOptions()
    options.cert_manager = cam
    options.network.cookie = COOKIE
    options.network.registrar_enabled = False
    options.network.acceptors = [acceptor]
    if flags is not None:
        options.network.flags = flags
    node = ergo_py.start_node(PY, options)
    pair = Pair(node, None, ca, cam, key_dir, node.network().acceptors()[0].port)  # type: ignore[arg-type]
    try:
        pair.write_go_cert()
        pair.peer = GoPeer(
            binary, GO, COOKIE, key_dir / "go.crt", key_dir / "go.key", True, go_args
        )
    except BaseException:
        node.stop()
        raise
    route = gen.NetworkRoute(host="127.0.0.1", port=pair.peer.port, tls=True, protocol="ergo")
    node.network().add_route(GO, route)
    return pair


class SenderSink(act.Actor):
    """Records integer messages per sender (in order?) and answers calls with the request."""

    def init(self, out: queue.Queue[Any]) -> None:
        self.out = out

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put((sender, message))

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return request


def go_echo() -> gen.ProcessID:
    return gen.ProcessID("echo", GO)


def go_stats(node: gen.Node, want: int) -> str:
    """The Go echo's counts once it has seen ``want`` messages (bounded wait)."""
    deadline = time.monotonic() + 30.0
    stats = ""
    while time.monotonic() < deadline:
        stats = node.call(go_echo(), "stats")
        if stats.startswith(f"count={want} "):
            return stats
        time.sleep(0.05)
    raise AssertionError(f"the Go echo saw {stats}, not {want} messages")


# --- fixtures ---


@pytest.fixture(scope="module", name="binary")
def binary_fixture() -> Path:
    return gopeer_binary()


@pytest.fixture(name="ergo_acceptor")
def ergo_acceptor_fixture() -> gen.AcceptorOptions:
    """The Python node's acceptor for the Go peer (a module may override it)."""
    return gen.AcceptorOptions(host="127.0.0.1", port=0, protocol="ergo")


@pytest.fixture(name="go_args")
def go_args_fixture() -> tuple[str, ...]:
    """Further command-line arguments of the Go peer (a module may override it)."""
    return ()


@pytest.fixture(name="pair")
def pair_fixture(
    binary: Path, key_dir: Path, ergo_acceptor: gen.AcceptorOptions, go_args: tuple[str, ...]
) -> Iterator[Pair]:
    pair = start_pair(binary, key_dir, ergo_acceptor, go_args)
    try:
        yield pair
    finally:
        pair.node.stop()
        pair.peer.stop()
