"""``Cluster``: several nodes on loopback with a fresh test CA and mutual TLS on.

Every node gets a certificate for its own name from the cluster's CA, trusts
only that CA in both directions and requires client certificates. Ports are
free ports; the registrar runs on a private port, so clusters in one process
(or parallel test runs) do not meet. ``close()`` stops every node.

A node runs in the calling process or, with ``processes=True`` (or
``start(name, process=True)``), in a child process of its own
(:class:`~ergo_py.testing.process_node.ProcessNode`, see that module for the
design). Both kinds mix freely: they find each other through the cluster's
registrar port. ``cluster[name]`` is a ``gen.Node`` either way; the CA and its
key stay in this process, and certificate changes made through the cluster
(``rotate``, ``rotate_ca``) reach the children over their control channel.

With ``netns=True`` every node is a process node in a Linux network namespace
of its own, with its own IP on a private bridge (:mod:`ergo_py.testing.netns`):
node names are ``nK@IP``, certificates carry that IP, there is no registrar
(every node has a static route to every other) and ``cut``/``heal``/
``isolate``/``rejoin`` break the network underneath the nodes.

In every mode ``delay``/``stall``/``unstall`` slow down or freeze the link
between two nodes: both nodes' static routes for each other then point at a
:class:`~ergo_py.testing.relay.Relay` (one per direction, in the dialling
node's namespace), and the connection between them moves onto it.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterable

from ergo_py.gen.cert import Certificate, CertPool, ClientAuth
from ergo_py.gen.certmanager import CertAuthManager, create_cert_auth_manager
from ergo_py.gen.errors import (
    ErrIncorrect,
    ErrNoConnection,
    ErrNoRoute,
    ErrTaken,
    ErrTimeout,
    ErrUnsupported,
)
from ergo_py.gen.node import Node
from ergo_py.gen.options import DEFAULT_PORT, AcceptorOptions, NetworkRoute, NodeOptions
from ergo_py.lib.ca import CertificateAuthority
from ergo_py.net.retry import wait_until
from ergo_py.testing.netns import Fabric
from ergo_py.testing.process_node import DEFAULT_START_TIMEOUT, ProcessNode
from ergo_py.testing.relay import Relay

__all__ = ["Cluster", "free_port"]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Cluster(contextlib.AbstractContextManager["Cluster"]):
    """Nodes ``n1@127.0.0.1`` ... (or ``names``), started on construction.

    ``processes``: start each node in a child process of its own (the default
    for :meth:`start`; ``start_timeout`` bounds each child's start-up).

    ``netns``: each node a process in a network namespace of its own, with
    its own IP (root only; see :func:`ergo_py.testing.netns.unavailable`).
    ``names`` are then bare (``"a"``, or ``"a@IP"`` with the IP it gets):
    the cluster appends ``@IP``; ``cluster.names`` holds the full names.

    Public attributes: ``names`` (the names given, then any started later),
    ``nodes`` (the running ones by name; ``cluster[name]`` is
    ``nodes[name]``), ``ca`` (the current CA), ``managers`` (each TLS node's
    cert manager in this process: changing one changes that node's
    certificate or trust settings, forwarded to a process node as it happens)
    and ``options`` (what each node was last started with).
    """

    def __init__(
        self,
        n: int = 3,
        names: Iterable[str] | None = None,
        *,
        tls: bool = True,
        cookie: str = "ergo-py-cluster",
        start: bool = True,
        processes: bool = False,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        netns: bool = False,
    ) -> None:
        self.fabric: Fabric | None = None
        self.nodes: dict[str, Node] = {}
        self.relays: dict[tuple[str, str], Relay] = {}  # (dialler, peer): see delay()
        if netns:
            self.fabric = Fabric()
            atexit.register(self.close)
            try:
                bases = list(names) if names is not None else [f"n{i + 1}" for i in range(n)]
                self.names = [self._netns_name(base) for base in bases]
            except BaseException:
                self.close()
                raise
        else:
            self.names = (
                list(names) if names is not None else [f"n{i + 1}@{HOST}" for i in range(n)]
            )
        self.tls = tls
        self.cookie = cookie
        self.processes = processes or netns
        self.start_timeout = start_timeout
        self.ca = CertificateAuthority.create("ergo_py test cluster CA")
        self._ca_generation = 1
        self.registrar_port = free_port()
        self.managers: dict[str, CertAuthManager] = {}
        self.options: dict[str, NodeOptions] = {}
        if start:
            try:
                if processes:
                    self._start_processes(self.names)
                else:
                    for name in self.names:
                        self.start(name)
            except BaseException:
                self.close()
                raise

    def _start_processes(self, names: list[str]) -> None:
        """Start process nodes side by side (a child's start-up is mostly imports)."""
        options = {name: self.node_options(name) for name in names}
        self.options.update(options)
        timeout = self.start_timeout
        with concurrent.futures.ThreadPoolExecutor(len(names) or 1) as pool:
            futures = {
                name: pool.submit(
                    ProcessNode, name, options[name], start_timeout=timeout, netns=self._ns(name)
                )
                for name in names
            }
        errors: list[BaseException] = []
        for name, future in futures.items():
            try:
                self.nodes[name] = future.result()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        for name in names:
            self._add_routes(name)

    # -- network namespaces

    def _netns_name(self, name: str) -> str:
        """``name`` with the IP of its namespace (made on first use) as host."""
        assert self.fabric is not None
        base, _, host = name.partition("@")
        _, ip = self.fabric.attach(base)
        if host and host != ip:
            raise ErrIncorrect(f"{name}: in a netns cluster that node's address is {ip}")
        return f"{base}@{ip}"

    def _ns(self, name: str) -> str | None:
        return None if self.fabric is None else self.fabric.netns(name.partition("@")[0])

    def _fabric(self) -> Fabric:
        if self.fabric is None:
            raise ErrUnsupported("network faults need a Cluster(netns=True)")
        return self.fabric

    def _add_routes(self, name: str) -> None:
        """Static routes between ``name`` and every other node (no registrar in netns mode).

        A relayed pair (see :meth:`delay`) gets the route through its relay.
        """

        def add(at: str, to: str) -> None:
            relay = self.relays.get((at, to))
            if relay is not None:
                self._point(at, to, NetworkRoute(host=relay.host, port=relay.port))
            elif self.fabric is not None:
                route = NetworkRoute(host=self.address(to), port=DEFAULT_PORT)
                with contextlib.suppress(ErrTaken):  # already there (a restart)
                    self.nodes[at].network().add_route(re.escape(to), route)

        for other in self.names:
            if other != name:
                add(name, other)
                if other in self.nodes:
                    add(other, name)

    def _point(self, at: str, to: str, route: NetworkRoute) -> None:
        """Make ``route`` node ``at``'s only static route for ``to``."""
        network = self.nodes[at].network()
        with contextlib.suppress(ErrNoRoute):
            network.remove_route(re.escape(to))
        network.add_route(re.escape(to), route)

    def address(self, name: str) -> str:
        """The IP node ``name`` listens on (its namespace's; 127.0.0.1 otherwise)."""
        if self.fabric is None:
            return HOST
        return self.fabric.address(name.partition("@")[0])

    def cut(self, a: str, b: str) -> None:
        """Silently drop every packet between nodes ``a`` and ``b`` (netns only).

        No FIN, no RST: both sides find out by keepalive (3 silent
        keepalive periods); new connections between them fail.
        """
        self._fabric().cut(a.partition("@")[0], b.partition("@")[0])

    def heal(self, a: str, b: str) -> None:
        """Undo :meth:`cut`: the next connection attempt between them succeeds."""
        self._fabric().heal(a.partition("@")[0], b.partition("@")[0])

    def isolate(self, name: str) -> None:
        """Take node ``name``'s interface down: a silent peer to everyone (netns only)."""
        self._fabric().isolate(name.partition("@")[0])

    def rejoin(self, name: str) -> None:
        """Undo :meth:`isolate`."""
        self._fabric().rejoin(name.partition("@")[0])

    # -- slow and stalled links (every mode)

    def full_name(self, name: str) -> str:
        """``name`` as the cluster knows it (a netns node may be named bare: ``"a"``)."""
        if name in self.names:
            return name
        for full in self.names:
            if full.partition("@")[0] == name:
                return full
        raise ErrIncorrect(f"{name}: no such node in this cluster")

    def _relayed(self, a: str, b: str) -> tuple[Relay, Relay]:
        """The relays between ``a`` and ``b`` (made on first use; the link moves onto them)."""
        a, b = self.full_name(a), self.full_name(b)
        if a == b:
            raise ErrIncorrect(f"{a}: a link needs two nodes")
        made = False
        for x, y in ((a, b), (b, a)):
            if (x, y) not in self.relays:
                ns = self._ns(x)
                self.relays[(x, y)] = Relay(
                    self._target_of(y),
                    listen_netns=ns,
                    target_netns=ns,
                    name=f"{x}->{y}",
                )
                made = True
                if x in self.nodes:
                    relay = self.relays[(x, y)]
                    self._point(x, y, NetworkRoute(host=relay.host, port=relay.port))
        if made and a in self.nodes and b in self.nodes:
            for x, y in ((a, b), (b, a)):
                if y in self.nodes[x].network().nodes():
                    self.nodes[x].network().reconnect(y)  # onto the relay, without a gap
                    break
        return self.relays[(a, b)], self.relays[(b, a)]

    def _target_of(self, name: str) -> Callable[[], tuple[str, int]]:
        """Where node ``name`` listens now (asked anew each time: it may have restarted)."""
        return lambda: (self.address(name), self._acceptor_port(name))

    def _acceptor_port(self, name: str) -> int:
        node = self.nodes.get(name)
        if node is None:
            raise ErrNoConnection(f"{name} is not running")
        acceptors = node.network().acceptors()
        if not acceptors:
            raise ErrNoConnection(f"{name} has no acceptor")
        return acceptors[0].port

    def delay(self, a: str, b: str, seconds: float) -> None:
        """Hold every byte between ``a`` and ``b`` ``seconds`` each way (0: no delay).

        The first fault on a pair moves the link onto relays (see the module
        docstring), where it stays until ``close``.
        """
        for relay in self._relayed(a, b):
            relay.set_delay(seconds)

    def stall(self, a: str, b: str) -> None:
        """Freeze the link between ``a`` and ``b``: nothing passes, nothing is closed.

        Held bytes wait, in order, until :meth:`unstall`; new connections
        between them hang. Both sides find out by keepalive.
        """
        for relay in self._relayed(a, b):
            relay.stall()

    def unstall(self, a: str, b: str) -> None:
        """Undo :meth:`stall`: what was held goes through (each way, in order)."""
        for relay in self._relayed(a, b):
            relay.unstall()

    def node_options(
        self, name: str, *, tls: bool | None = None, cookie: str | None = None
    ) -> NodeOptions:
        """The options a cluster node ``name`` is started with (a new object each call).

        ``tls``/``cookie`` override the cluster's for this node (e.g. a plain
        TCP node, or one with the wrong cookie).
        """
        options = NodeOptions()
        if self.tls if tls is None else tls:
            cam = create_cert_auth_manager(self.ca.issue(name, hosts=(self.address(name),)))
            cam.set_client_cas(self.ca.pool())
            cam.set_root_cas(self.ca.pool())
            cam.set_client_auth(ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
            options.cert_manager = cam
            self.managers[name] = cam
        options.network.cookie = self.cookie if cookie is None else cookie
        options.network.registrar_port = self.registrar_port
        if self.fabric is not None:
            # a port space per namespace: one fixed port; static routes, no registrar
            options.network.registrar_enabled = False
            options.network.acceptors = [
                AcceptorOptions(host=self.address(name), port=DEFAULT_PORT)
            ]
        else:
            options.network.acceptors = [AcceptorOptions(host=HOST, port=free_port())]
        return options

    def start(
        self,
        name: str,
        options: NodeOptions | None = None,
        *,
        tls: bool | None = None,
        cookie: str | None = None,
        process: bool | None = None,
    ) -> Node:
        """Start (or restart) node ``name`` (``tls``/``cookie``: see :meth:`node_options`).

        ``process``: run it in a child process (a :class:`ProcessNode`);
        None follows the cluster's ``processes``. In a netns cluster every node
        is a process node, and ``name`` may be bare (``"x"``: ``@IP`` is
        appended; the node's ``name`` is the full one).
        """
        from ergo_py import start_node

        if self.fabric is not None:
            if process is False:
                raise ErrUnsupported("in a netns cluster every node runs in a process")
            name = self._netns_name(name)
        if name in self.nodes:
            raise ErrIncorrect(f"{name} is running")
        options = options or self.node_options(name, tls=tls, cookie=cookie)
        self.options[name] = options
        in_process = self.processes if process is None else process
        node: Node
        if in_process:
            node = ProcessNode(
                name, options, start_timeout=self.start_timeout, netns=self._ns(name)
            )
        else:
            node = start_node(name, options)
        self.nodes[name] = node
        if name not in self.names:
            self.names.append(name)
        self._add_routes(name)
        return node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def rotate(self, name: str, *, reconnect: bool = False) -> Certificate:
        """Give ``name`` a freshly issued certificate; new connections present it.

        ``reconnect``: also move every connection ``name`` has onto it at once
        (see :meth:`reconnect_all`); otherwise connections already up keep the
        old certificate until they close.
        """
        cert = self.ca.issue(name, hosts=(self.address(name),))
        self.managers[name].update(cert)
        self._sync(name)
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
            self._sync(name)

    def _sync(self, name: str) -> None:
        """A process node's manager follows the parent-side one; raise if it could not."""
        node = self.nodes.get(name)
        if isinstance(node, ProcessNode):
            node.sync_certs()

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
        """Stop node ``name`` gracefully (it can be started again with ``start``)."""
        self.nodes.pop(name).stop()

    def kill(self, name: str) -> None:
        """SIGKILL process node ``name``: a crash, as its peers see it.

        Returns once the child is reaped. Its peers notice the lost
        connection by themselves (links and monitors fire with
        ``gen.ErrNoConnection``, pending calls fail). It can be started again
        with ``start``. ``ErrUnsupported`` for a node in this process.
        """
        node = self.nodes.get(name)
        if node is None:
            raise ErrIncorrect(f"{name} is not running")
        if not isinstance(node, ProcessNode):
            raise ErrUnsupported(f"{name} runs in this process: only process nodes can be killed")
        del self.nodes[name]
        node.kill()

    def wait_connected(self, a: str, b: str, timeout: float = 10.0) -> None:
        """Connect ``a`` to ``b`` if needed and wait until both sides list each other."""
        self.nodes[a].network().get_node(b)
        if not wait_until(
            lambda: b in self.nodes[a].network().nodes() and a in self.nodes[b].network().nodes(),
            timeout,
        ):
            raise ErrTimeout(f"{a} and {b} not connected within {timeout} s")

    def close(self) -> None:
        """Stop every node (idempotent); children that do not stop in time are killed.

        Process nodes stop concurrently (each is bounded by its node's
        ``shutdown_timeout`` plus a margin); when this returns no child is left,
        and a netns cluster's namespaces are deleted (also run at exit).
        """
        try:
            relays, self.relays = list(self.relays.values()), {}
            for relay in relays:  # first: a stalled link must not hold a node's stop up
                relay.close()
            self._close_nodes()
        finally:
            if self.fabric is not None:
                self.fabric.close()
                atexit.unregister(self.close)

    def _close_nodes(self) -> None:
        nodes = list(self.nodes.values())
        self.nodes.clear()
        procs = [n for n in nodes if isinstance(n, ProcessNode)]
        stoppers = [
            threading.Thread(target=p.stop, name=f"ergo-cluster-stop {p.name}", daemon=True)
            for p in procs
        ]
        for t in stoppers:
            t.start()
        try:
            for node in nodes:
                if not isinstance(node, ProcessNode):
                    node.stop()
        finally:
            for t, p in zip(stoppers, procs, strict=True):
                t.join(p.stop_bound)
                if t.is_alive():  # cannot happen unless stop() itself hangs: be sure anyway
                    p.kill()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        netns = ", netns=True" if self.fabric is not None else ""
        return f"Cluster({sorted(self.nodes)!r}, tls={self.tls}{netns})"
