"""``Cluster``: several nodes on loopback with a fresh test CA and mutual TLS on.

Every node gets a certificate for its own name from the cluster's CA, trusts
only that CA in both directions and requires client certificates. Ports are
free ports; the registrar runs on a private port, so clusters in one process
(or parallel test runs) do not meet. ``close()`` stops every node.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from ergo_py.gen.cert import Certificate, CertPool, ClientAuth
from ergo_py.gen.certmanager import CertAuthManager, create_cert_auth_manager
from ergo_py.gen.errors import ErrIncorrect, ErrTimeout
from ergo_py.gen.node import Node
from ergo_py.gen.options import AcceptorOptions, NodeOptions
from ergo_py.lib.ca import CertificateAuthority

__all__ = ["Cluster", "free_port"]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """Nodes ``n1@127.0.0.1`` ... (or ``names``), started on construction."""

    def __init__(
        self,
        n: int = 3,
        names: Iterable[str] | None = None,
        *,
        tls: bool = True,
        cookie: str = "ergo-py-cluster",
        start: bool = True,
    ) -> None:
        self.names = list(names) if names is not None else [f"n{i + 1}@{HOST}" for i in range(n)]
        self.tls = tls
        self.cookie = cookie
        self.ca = CertificateAuthority.create("ergo_py test cluster CA")
        self._ca_generation = 1
        self.registrar_port = free_port()
        self.managers: dict[str, CertAuthManager] = {}
        self.options: dict[str, NodeOptions] = {}
        self.nodes: dict[str, Node] = {}
        if start:
            try:
                for name in self.names:
                    self.start(name)
            except BaseException:
                self.close()
                raise

    def node_options(
        self, name: str, *, tls: bool | None = None, cookie: str | None = None
    ) -> NodeOptions:
        """The options a cluster node ``name`` is started with (a new object each call).

        ``tls``/``cookie`` override the cluster's for this node (e.g. a plain
        TCP node, or one with the wrong cookie).
        """
        options = NodeOptions()
        if self.tls if tls is None else tls:
            cam = create_cert_auth_manager(self.ca.issue(name, hosts=(HOST,)))
            cam.set_client_cas(self.ca.pool())
            cam.set_root_cas(self.ca.pool())
            cam.set_client_auth(ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
            options.cert_manager = cam
            self.managers[name] = cam
        options.network.cookie = self.cookie if cookie is None else cookie
        options.network.registrar_port = self.registrar_port
        options.network.acceptors = [AcceptorOptions(host=HOST, port=free_port())]
        return options

    def start(
        self,
        name: str,
        options: NodeOptions | None = None,
        *,
        tls: bool | None = None,
        cookie: str | None = None,
    ) -> Node:
        """Start (or restart) node ``name`` (``tls``/``cookie``: see :meth:`node_options`)."""
        from ergo_py.node import start_node

        if name in self.nodes:
            raise ErrIncorrect(f"{name} is running")
        options = options or self.node_options(name, tls=tls, cookie=cookie)
        self.options[name] = options
        node = start_node(name, options)
        self.nodes[name] = node
        if name not in self.names:
            self.names.append(name)
        return node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def rotate(self, name: str, *, reconnect: bool = False) -> Certificate:
        """Give ``name`` a freshly issued certificate; new connections present it.

        ``reconnect``: also move every connection ``name`` has onto it at once
        (see :meth:`reconnect_all`); otherwise connections already up keep the
        old certificate until they close.
        """
        cert = self.ca.issue(name, hosts=(HOST,))
        self.managers[name].update(cert)
        if reconnect:
            self.reconnect_all(name)
        return cert

    def rotate_ca(
        self, settle: Callable[[str], None] | None = None, common_name: str = ""
    ) -> CertificateAuthority:
        """Replace the cluster CA by the overlap procedure, live; returns the new CA.

        1. every node trusts the old and the new CA; 2. every node gets a
        certificate from the new CA; 3. every node drops the old CA. After
        each step (and after each node's re-issue) ``settle(step)`` runs; by
        default it moves every connection onto the current settings, so a
        step that broke trust would fail right there.
        """
        if not self.tls:
            raise ErrIncorrect("the cluster runs without TLS")

        def reconnect_everything(_: str) -> None:
            for name in list(self.nodes):
                self.reconnect_all(name)

        settle = settle or reconnect_everything
        old = self.ca
        self._ca_generation += 1
        new = CertificateAuthority.create(
            common_name or f"ergo_py test cluster CA {self._ca_generation}"
        )
        both = CertPool()
        for cert in (*old.pool().certificates, *new.pool().certificates):
            both.add(cert)
        self._trust(both)
        settle("trust old and new CA")
        self.ca = new
        for name in list(self.nodes):
            self.rotate(name)
            settle(f"{name} re-issued from the new CA")
        self._trust(new.pool())
        settle("old CA dropped")
        return new

    def _trust(self, pool: CertPool) -> None:
        for name in self.nodes:
            cam = self.managers[name]
            cam.set_client_cas(pool)
            cam.set_root_cas(pool)

    def disconnect(self, a: str, b: str) -> None:
        """Close the connection between ``a`` and ``b`` (from ``a``'s side), gracefully."""
        self.nodes[a].network().disconnect(b)

    def reconnect(self, a: str, b: str) -> None:
        """Move the connection between ``a`` and ``b`` onto a new one (from ``a``'s side).

        Invisible to actors; the new connection uses both nodes' current settings.
        """
        self.nodes[a].network().reconnect(b)

    def reconnect_all(self, name: str) -> None:
        """:meth:`reconnect` every connection node ``name`` has."""
        network = self.nodes[name].network()
        for peer in network.nodes():
            network.reconnect(peer)

    def stop(self, name: str) -> None:
        """Stop node ``name`` (it can be started again with ``start``)."""
        self.nodes.pop(name).stop()

    def wait_connected(self, a: str, b: str, timeout: float = 10.0) -> None:
        """Connect ``a`` to ``b`` if needed and wait until both sides list each other."""
        self.nodes[a].network().get_node(b)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b in self.nodes[a].network().nodes() and a in self.nodes[b].network().nodes():
                return
            time.sleep(0.02)
        raise ErrTimeout(f"{a} and {b} not connected within {timeout} s")

    def close(self) -> None:
        """Stop every node (idempotent)."""
        while self.nodes:
            _, node = self.nodes.popitem()
            node.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cluster({sorted(self.nodes)!r}, tls={self.tls})"
