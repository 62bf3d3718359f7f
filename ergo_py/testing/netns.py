"""Linux network namespaces for ``Cluster(netns=True)``: one IP per node.

Layout: a dedicated *hub* namespace holds a bridge; every node gets a
namespace of its own, joined to the bridge by a veth pair (``eth0`` on the
node's side, ``vK`` in the hub), with the address ``10.213.0.K/24``. No
interface is ever created in the caller's namespace, and the subnet exists
only inside these namespaces, so two fabrics (parallel runs) never meet: the
namespace names carry the creating pid and a counter.

Faults, all done inside the namespaces with ``ip`` (iproute2), no extra tools:

- ``cut(a, b)``: a blackhole route for the other's IP in each namespace;
  packets are dropped without any FIN or RST (``heal`` removes the routes);
- ``isolate(name)``: the node's ``eth0`` down (``rejoin`` brings it up): a
  silent peer for everyone.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); :func:`unavailable` says why
namespaces cannot be made here, for a test's skip reason. The child process
of a node enters its namespace with :func:`enter` (``setns(2)``) before it
opens any socket.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import shutil
import socket
import subprocess
import threading

from ergo_py.gen.errors import ErrIncorrect

__all__ = ["Fabric", "enter", "socket_in", "unavailable"]

SUBNET = "10.213.0"  # /24, used only inside the fabric's namespaces
NETNS_DIR = "/var/run/netns"
_CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)
_counter_lock = threading.Lock()


def _ip_binary() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.path.exists(p)), None
    )


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = _ip_binary()
    if ip is None:
        raise ErrIncorrect("iproute2's ip is not installed")
    result = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise ErrIncorrect(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def unavailable() -> str | None:
    """Why network namespaces cannot be created here, or None if they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if _ip_binary() is None:
        return "iproute2's ip is not installed"
    probe = _unique("ergoprobe")
    try:
        result = _run("netns", "add", probe, check=False)
        if result.returncode != 0:
            return f"ip netns add fails: {result.stderr.strip()}"
    finally:
        _run("netns", "del", probe, check=False)
    return None


def _unique(prefix: str) -> str:
    with _counter_lock:
        n = next(_counter)
    return f"{prefix}{os.getpid()}-{n}"


def enter(netns: str) -> None:
    """Move the calling thread (and threads it starts later) into namespace ``netns``."""
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        setns = getattr(os, "setns", None)
        if setns is not None:  # Python 3.12+
            setns(fd, _CLONE_NEWNET)
            return
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def socket_in(netns: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A new TCP socket in namespace ``netns`` (None: this thread's own).

    A socket belongs to the namespace it was made in for life, whichever
    thread uses it later; a short-lived thread enters ``netns`` to make it,
    so no thread of the caller ever changes namespace.
    """
    if netns is None:
        return socket.socket(family, socket.SOCK_STREAM)
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            enter(netns)
            made.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=make, name=f"ergo-netns-socket[{netns}]", daemon=True)
    thread.start()
    thread.join(10.0)
    if not made:
        raise ErrIncorrect(f"no socket made in namespace {netns} within 10 s")
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    return result


class Fabric:
    """A hub namespace with a bridge, and one namespace per attached node.

    ``close()`` deletes every namespace (and with them the veths); it is
    idempotent and safe after a partial set-up.
    """

    def __init__(self) -> None:
        self.prefix = _unique("ergo")
        self.hub = f"{self.prefix}-hub"
        self._lock = threading.Lock()
        self._namespaces: list[str] = []
        self._nodes: dict[str, tuple[str, str, int]] = {}  # key -> (netns, ip, index)
        self._cuts: set[frozenset[str]] = set()
        self._closed = False
        try:
            self._add_ns(self.hub)
            _run("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _run("-n", self.hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _add_ns(self, name: str) -> None:
        _run("netns", "add", name)
        self._namespaces.append(name)
        _run("-n", name, "link", "set", "lo", "up")

    def attach(self, key: str) -> tuple[str, str]:
        """A namespace and IP for ``key`` (made on first use): ``(netns, ip)``."""
        with self._lock:
            if self._closed:
                raise ErrIncorrect("the fabric is closed")
            if key in self._nodes:
                netns, ip, _ = self._nodes[key]
                return netns, ip
            index = len(self._nodes) + 1
            if index > 250:
                raise ErrIncorrect("at most 250 nodes per fabric")
            netns, ip = f"{self.prefix}-n{index}", f"{SUBNET}.{index}"
            self._add_ns(netns)
            hub_end = f"v{index}"
            _run("-n", self.hub, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0",
                 "netns", netns)  # fmt: skip
            _run("-n", self.hub, "link", "set", hub_end, "master", "br0")
            _run("-n", self.hub, "link", "set", hub_end, "up")
            _run("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _run("-n", netns, "link", "set", "eth0", "up")
            self._nodes[key] = (netns, ip, index)
            return netns, ip

    def address(self, key: str) -> str:
        return self._nodes[key][1]

    def netns(self, key: str) -> str:
        return self._nodes[key][0]

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between ``a`` and ``b`` (both ways), silently."""
        pair = frozenset((a, b))
        if pair in self._cuts:
            return
        for x, y in ((a, b), (b, a)):
            _run("-n", self.netns(x), "route", "add", "blackhole", f"{self.address(y)}/32")
        self._cuts.add(pair)

    def heal(self, a: str, b: str) -> None:
        """Undo :meth:`cut`."""
        pair = frozenset((a, b))
        if pair not in self._cuts:
            return
        for x, y in ((a, b), (b, a)):
            _run("-n", self.netns(x), "route", "del", "blackhole", f"{self.address(y)}/32",
                 check=False)  # fmt: skip
        self._cuts.discard(pair)

    def isolate(self, key: str) -> None:
        """Take ``key``'s interface down: it neither sends nor hears anything."""
        _run("-n", self.netns(key), "link", "set", "eth0", "down")

    def rejoin(self, key: str) -> None:
        """Undo :meth:`isolate` (the address and its subnet route come back)."""
        netns, ip, _ = self._nodes[key]
        _run("-n", netns, "link", "set", "eth0", "up")
        # the address survives a link down; be sure it is there
        if f" {ip}/" not in _run("-n", netns, "-o", "addr", "show", "dev", "eth0").stdout:
            _run("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")

    def close(self) -> None:
        """Delete every namespace this fabric made (node ones first, then the hub)."""
        with self._lock:
            self._closed = True
            namespaces, self._namespaces = self._namespaces, []
        for name in reversed(namespaces):
            _run("netns", "del", name, check=False)

    def __repr__(self) -> str:
        return f"Fabric({self.prefix!r}, {len(self._nodes)} nodes)"
