"""Cluster nodes in their own OS processes: :class:`ProcessNode`, the parent's handle on one.

(Over 600 lines on purpose: both ends of the control pipe live here, the
parent's handle and the child's server, because they share one wire format
and one table of operation names; split, a change to either would need the
other file open beside it.)

Why a process: a node there has its own interpreter, GIL, event loop and
sockets, as a node on another machine would, and it can be SIGKILLed to
simulate a crash (its peers then see the connection drop, links and monitors
fire with ``gen.ErrNoConnection``, pending calls fail).

Why the ``spawn`` start method: ``fork`` copies a process whose other threads
(node loops, actor threads) may hold locks at that instant; the child could
deadlock on them. ``spawn`` starts a fresh interpreter (about 0.5-1 s), which
imports the parent's ``sys.path`` modules by name. So factories, message types
and error classes must be importable module-level names; a pytest test module
qualifies, as does anything installed.

The control channel is one duplex ``multiprocessing`` pipe (a socketpair) per
child, carrying pickled frames:

- parent -> child: ``(id, op, pickled (args, kwargs))``; ``op`` names a
  forwarded member (see "Forwarding" below) or ``start``, ``stop``,
  ``certs``, ``remote.*``. The first request, ``start``, carries the node
  name, its ``NodeOptions`` without the cert manager, and the manager's
  state: certificate chain and private key as PEM bytes, the CA pools as
  DER, the client-auth mode and server name. The key stays in memory (pipe
  in, memfd inside the child's manager); nothing is written to disk, and the
  cluster's CA key never leaves the parent.
- child -> parent: ``(id, kind, payload)`` with kind ``ok`` (the pickled
  value), ``ergo`` (a ``gen.ErgoError``: pickled, plus its class name and
  text in case it does not unpickle; raised again in the parent as the same
  class) or ``remote`` (anything else: raised as :class:`RemoteError` with
  the remote type, text and traceback).

The child serves each request on its own thread (a ``call`` may block for its
timeout), so requests from several parent threads run concurrently. In the
parent, a reader thread hands answers to the waiting callers and watches the
child's sentinel: once the child has ended, every pending and later request
raises :class:`ErrNodeProcessExited` at once. Every wait is bounded. The
child treats end-of-file on the pipe as "the parent is gone": it stops its
node and exits, so no child outlives its parent even if the parent is killed.

Forwarding: the ``gen.Node`` / ``gen.Network`` members are not written out
here but generated from the interfaces (every public method and property,
abstract or not): each sends ``node.<name>`` / ``net.<name>`` and the child
runs that member of its real node, so a member added to ``gen.Node`` is
forwarded as it stands. Written out are only the exceptions: the identity
(kept from start-up), ``call`` (its bound grows with its timeout),
``is_alive``, ``network``, ``stop`` and ``wait`` (answered on this side), and
``Network.get_node`` (a proxy stands for its ``RemoteNode``).

Web ports: ``metrics_port()`` and ``observer_port()`` are forwarded too.
A node in a network namespace serves them inside it, out of the test's
reach; for such a node the handle relays each one
(:class:`~ergo_py.testing.relay.Relay`, listening on 127.0.0.1 here and
dialling in the namespace) and returns the relay's port.

Certificate changes: the handle subscribes to the parent-side cert manager it
was started with (``Cluster.managers[name]``) and forwards each new state;
the child applies what differs to its own manager (``update()``,
``set_client_cas()`` ...). :meth:`ProcessNode.sync_certs` does the same and
raises if the child could not be told.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import functools
import importlib
import itertools
import logging
import multiprocessing
import os
import pickle
import threading
import traceback
import types
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ergo_py.gen.cert import Certificate, CertPool, ClientAuth
from ergo_py.gen.certmanager import (
    CertAuthManager,
    CertManager,
    CertState,
    create_cert_auth_manager,
    create_cert_manager,
)
from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNodeTerminated,
    ErrTimeout,
    ErrUnsupported,
    ErrUnsupportedType,
)
from ergo_py.gen.identifiers import PID, Atom
from ergo_py.gen.node import Network, Node, RemoteNode, Target
from ergo_py.gen.options import DEFAULT_REQUEST_TIMEOUT, NodeOptions, ProcessOptions
from ergo_py.gen.registrar import Registrar, Route
from ergo_py.lib.logs import configure_logging, json_configured

__all__ = [
    "DEFAULT_CONTROL_TIMEOUT",
    "DEFAULT_START_TIMEOUT",
    "ErrNodeProcessExited",
    "ProcessNode",
    "RemoteError",
]

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 60.0
"""Bound on starting a child: interpreter, imports, ``start_node`` (slow on a busy machine)."""

DEFAULT_CONTROL_TIMEOUT = 30.0
"""Bound on one control request (for ``call``: added to the call's own timeout)."""

_STOP_MARGIN = 5.0  # on top of the node's shutdown_timeout, before a stop turns into a kill
_KILL_WAIT = 5.0  # for the kernel to reap a SIGKILLed child

_SPAWN = multiprocessing.get_context("spawn")


class ErrNodeProcessExited(ErrNodeTerminated):
    """The node's process has ended (stopped, killed or crashed); ``exitcode`` says how.

    A negative ``exitcode`` is the signal that ended it (``-9``: SIGKILL).
    """

    def __init__(self, node: str, exitcode: int | None) -> None:
        super().__init__(f"node {node}: its process has exited (exit code {exitcode})")
        self.node = node
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node, self.exitcode))


class RemoteError(ErgoError):
    """An exception other than a ``gen.ErgoError`` raised in a node's process.

    ``remote_type``: its qualified class name (``builtins.ValueError``);
    ``remote_message``: ``str()`` of it; ``remote_traceback``: the formatted
    traceback in the child.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.remote_type, self.remote_message, self.remote_traceback))


# ---------------------------------------------------------------------------
# what crosses the pipe


def _pool_ders(pool: CertPool | None) -> tuple[bytes, ...] | None:
    if pool is None:
        return None
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in pool.certificates)


def _pool_from(ders: tuple[bytes, ...] | None) -> CertPool | None:
    if ders is None:
        return None
    return CertPool(x509.load_der_x509_certificate(der) for der in ders)


@dataclasses.dataclass(frozen=True)
class _CertSnapshot:
    """A cert manager's state in a picklable form (key as PEM bytes, in memory only)."""

    generation: int
    cert_pem: bytes
    key_pem: bytes
    auth: bool  # a CertAuthManager (trust settings below apply) or a plain CertManager
    client_cas: tuple[bytes, ...] | None
    root_cas: tuple[bytes, ...] | None
    client_auth: int
    server_name: str

    @classmethod
    def of(cls, manager: CertManager, state: CertState | None = None) -> _CertSnapshot:
        state = state or manager.state()
        cert_pem, key_pem = state.certificate.to_pem()
        return cls(
            generation=state.generation,
            cert_pem=cert_pem,
            key_pem=key_pem,
            auth=isinstance(manager, CertAuthManager),
            client_cas=_pool_ders(state.client_cas),
            root_cas=_pool_ders(state.root_cas),
            client_auth=int(state.client_auth),
            server_name=state.server_name,
        )


@dataclasses.dataclass(frozen=True)
class _StartSpec:
    name: str
    options: NodeOptions  # cert_manager removed
    certs: _CertSnapshot | None
    log_level: int
    log_json: bool = False  # the parent writes JSON lines (lib.logs): so does the child


def _qualname(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _error_reply(exc: BaseException) -> tuple[str, Any]:
    """How an exception raised in the child travels back (see the module docstring)."""
    if isinstance(exc, ErgoError):
        try:
            pickled: bytes | None = pickle.dumps(exc)
        except Exception:
            pickled = None
        return "ergo", (type(exc).__module__, type(exc).__qualname__, str(exc), pickled)
    tb = "".join(traceback.format_exception(exc))
    return "remote", (_qualname(exc), str(exc), tb)


def _error_from(kind: str, payload: Any) -> ErgoError:
    """The parent's exception for an error reply: the same class whenever it can be rebuilt."""
    if kind == "ergo":
        module, qualname, text, pickled = payload
        if pickled is not None:
            try:
                exc = pickle.loads(pickled)
            except Exception:
                exc = None
            if isinstance(exc, ErgoError):
                return exc
        try:  # did not pickle or unpickle: the class, with the text only
            cls: Any = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            if isinstance(cls, type) and issubclass(cls, ErgoError):
                rebuilt: ErgoError = cls(text)
                return rebuilt
        except Exception:
            pass
        return RemoteError(f"{module}.{qualname}", text)
    remote_type, text, tb = payload
    return RemoteError(remote_type, text, tb)


# ---------------------------------------------------------------------------
# the gen interfaces, forwarded (see "Forwarding" in the module docstring)


def _members(interface: type) -> dict[str, Any]:
    """The public members ``interface`` declares, abstract or not: methods and properties."""
    members: dict[str, Any] = {}
    for cls in reversed(interface.__mro__):
        if cls not in (object, abc.ABC):
            for name, value in vars(cls).items():
                if not name.startswith("_") and (callable(value) or isinstance(value, property)):
                    members[name] = value
    return members


class _Forwarding(Protocol):
    def _forward(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


def _forwarder(owner: str, op: str, declared: Any) -> Any:
    """A method (or property) of class ``owner`` running ``declared``'s namesake in the child."""
    if isinstance(declared, property):

        def get(self: _Forwarding) -> Any:
            return self._forward(op, (), {})

        return property(get, doc=declared.__doc__)

    def method(self: _Forwarding, *args: Any, **kwargs: Any) -> Any:
        return self._forward(op, args, kwargs)

    # Name, docstring and (through ``__wrapped__``) signature of the declared
    # one; not its ``__dict__``, which holds ``__isabstractmethod__``.
    functools.update_wrapper(method, declared, assigned=("__name__", "__doc__"), updated=())
    method.__qualname__ = f"{owner}.{declared.__name__}"
    return method


def _forwarders(interface: type, prefix: str) -> type:
    """A subclass of ``interface`` whose every member is forwarded as ``prefix + name``.

    Its instances must have ``_forward(op, args, kwargs)``. None of its
    members is abstract any more: what a subclass writes out wins.
    """
    owner = f"_{interface.__name__}Forwarders"
    namespace = {n: _forwarder(owner, prefix + n, m) for n, m in _members(interface).items()}
    return types.new_class(
        owner,
        (interface,),
        exec_body=lambda ns: ns.update(namespace, __module__=__name__),
    )


def _served(owner: Callable[[], object], name: str, declared: Any) -> Callable[..., Any]:
    """How the child runs the forwarded member ``name`` of ``owner()``."""
    if isinstance(declared, property):
        return lambda: getattr(owner(), name)
    return lambda *args, **kwargs: getattr(owner(), name)(*args, **kwargs)


# ---------------------------------------------------------------------------
# the child


def _child_main(conn: Connection, netns: str | None = None) -> None:
    """Entry point of the spawned process: start the node, serve requests, stop.

    ``netns``: first enter that network namespace (before any socket is opened;
    threads started later inherit it).
    """
    if netns is not None:
        from ergo_py.testing.netns import enter

        enter(netns)
    _Child(conn).run()


class _Child:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.cert_lock = threading.Lock()
        self.node: Node | None = None
        self.cam: CertManager | None = None
        self.certs: _CertSnapshot | None = None
        self.ops: dict[str, Callable[..., Any]] = {}

    def run(self) -> None:
        try:
            # The parent sends ``start`` right after starting us; bounded in case it died.
            if not self.conn.poll(DEFAULT_START_TIMEOUT):
                return
            req_id, op, blob = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            if op != "start":
                raise ErrIncorrect(f"the first request must be start, not {op}")
            (spec,), _ = pickle.loads(blob)
            node = self.start(spec)
        except BaseException as exc:
            self.reply(req_id, *_error_reply(exc))
            return
        self.reply(req_id, "ok", pickle.dumps((node.pid, node.creation)))
        try:
            self.serve()
        finally:
            node.stop()

    def start(self, spec: _StartSpec) -> Node:
        from ergo_py import start_node

        if spec.log_json:
            configure_logging("json", spec.log_level)
        else:
            logging.basicConfig(
                level=spec.log_level,
                format=f"%(asctime)s [{spec.name} pid {os.getpid()}] %(levelname)s %(name)s: "
                "%(message)s",
            )
        options = spec.options
        if spec.certs is not None:
            self.cam = self.new_manager(spec.certs)
            options = dataclasses.replace(options, cert_manager=self.cam)
            # a registrar that follows the cluster's trust (EtcdRegistrar(trust=...))
            # arrives unbound: it follows this process's manager
            bind = getattr(options.network.registrar, "bind_cert_manager", None)
            if bind is not None and isinstance(self.cam, CertAuthManager):
                bind(self.cam)
        self.certs = spec.certs
        node = start_node(spec.name, options)
        self.node = node

        def get_node(name: str) -> tuple[str, int]:
            remote = node.network().get_node(name)
            return str(remote.name), remote.creation

        def remote_spawn(
            peer: str, name: str, args: tuple[Any, ...], options: ProcessOptions | None
        ) -> PID:
            return node.network().get_node(peer).spawn(name, *args, options=options)

        self.ops = {
            **{f"node.{n}": _served(lambda: node, n, m) for n, m in _members(Node).items()},
            **{f"net.{n}": _served(node.network, n, m) for n, m in _members(Network).items()},
            "net.get_node": get_node,
            "net.registrar_nodes": lambda: r.nodes() if (r := node.network().registrar()) else None,
            "remote.spawn": remote_spawn,
            "remote.disconnect": lambda peer: node.network().get_node(peer).disconnect(),
            "certs": self.apply_certs,
        }
        return node

    @staticmethod
    def new_manager(snap: _CertSnapshot) -> CertManager:
        cert = Certificate.from_pem(snap.cert_pem, snap.key_pem)
        if not snap.auth:
            return create_cert_manager(cert)
        cam = create_cert_auth_manager(cert)
        cam.set_client_cas(_pool_from(snap.client_cas))
        cam.set_root_cas(_pool_from(snap.root_cas))
        cam.set_client_auth(ClientAuth(snap.client_auth))
        cam.set_server_name(snap.server_name)
        return cam

    def apply_certs(self, snap: _CertSnapshot) -> int:
        """Bring the child's manager to ``snap`` (only what differs; an older one is a no-op)."""
        with self.cert_lock:
            old, cam = self.certs, self.cam
            if old is None or cam is None:
                raise ErrUnsupported("this node runs without a cert manager")
            if snap.generation <= old.generation:
                return old.generation
            cert = None
            if (snap.cert_pem, snap.key_pem) != (old.cert_pem, old.key_pem):
                cert = Certificate.from_pem(snap.cert_pem, snap.key_pem)
            if isinstance(cam, CertAuthManager):
                # Certificate and pools in one validated step, as the parent
                # made them: a new certificate checked against the child's
                # pools alone would be refused whenever they had not yet
                # caught up (say, an etcd put still on its way here).
                pools: dict[str, CertPool | None] = {}
                if snap.client_cas != old.client_cas:
                    pools["client_cas"] = _pool_from(snap.client_cas)
                if snap.root_cas != old.root_cas:
                    pools["root_cas"] = _pool_from(snap.root_cas)
                if cert is not None or pools:
                    cam.update_all(cert, **pools)
                if snap.client_auth != old.client_auth:
                    cam.set_client_auth(ClientAuth(snap.client_auth))
                if snap.server_name != old.server_name:
                    cam.set_server_name(snap.server_name)
            elif cert is not None:
                cam.update(cert)
            self.certs = snap
            return snap.generation

    def serve(self) -> None:
        while True:
            try:
                req_id, op, blob = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError, KeyboardInterrupt):
                log.info("control channel closed: stopping the node")
                return
            if op == "stop":
                assert self.node is not None
                self.node.stop()
                self.reply(req_id, "ok", pickle.dumps(None))
                return
            threading.Thread(
                target=self.handle, args=(req_id, op, blob), name=f"ergo-control-{op}", daemon=True
            ).start()

    def handle(self, req_id: int, op: str, blob: bytes) -> None:
        try:
            args, kwargs = pickle.loads(blob)
            fn = self.ops.get(op)
            if fn is None:
                raise ErrUnsupported(f"unknown control request {op!r}")
            value = fn(*args, **kwargs)
            try:
                payload = pickle.dumps(value)
            except Exception as exc:
                raise ErrUnsupportedType(
                    f"the result of {op} cannot be sent to the parent: {exc}"
                ) from exc
            kind = "ok"
        except BaseException as exc:
            kind, payload = _error_reply(exc)
        self.reply(req_id, kind, payload)

    def reply(self, req_id: int, kind: str, payload: Any) -> None:
        with self.send_lock:
            try:
                self.conn.send_bytes(pickle.dumps((req_id, kind, payload)))
            except (OSError, ValueError):
                log.debug("control channel closed: reply %d dropped", req_id)


# ---------------------------------------------------------------------------
# the parent's handle


if TYPE_CHECKING:
    from ergo_py.testing.relay import Relay

    # mypy cannot see members made at run time. As an ``Any`` base these make
    # it take every forwarded member's signature from ``gen.Node`` /
    # ``gen.Network`` (the next base) and not count the class as abstract;
    # what is written out below is still checked against the interface.
    _NodeForwarders: Any
    _NetworkForwarders: Any
else:
    _NodeForwarders = _forwarders(Node, "node.")
    _NetworkForwarders = _forwarders(Network, "net.")


class ProcessNode(_NodeForwarders, Node):  # type: ignore[misc]  # an Any base: see above
    """A node running ``ergo_py.start_node`` in a child process, driven over a pipe.

    Starts the child and its node on construction (``ErrTimeout`` after
    ``start_timeout``; a node that fails to start raises its error here).
    Implements ``gen.Node`` by forwarding each member to the child (generated
    from the interface: see "Forwarding" in the module docstring), except
    ``wait`` (joins the child) and ``stop`` (graceful, then SIGKILL after
    ``stop_timeout``, by default the node's ``shutdown_timeout`` plus a
    margin). Other requests are bounded by ``control_timeout`` (``call``:
    plus its own timeout). Thread-safe. Arguments and results
    are pickled: they must be importable module-level types; a value that
    does not pickle raises ``gen.ErrUnsupportedType``. Errors raised in the
    child keep their ``gen`` class; others arrive as :class:`RemoteError`.
    Once the child has ended, every method raises :class:`ErrNodeProcessExited`.
    ``netns``: the child first enters that network namespace (a name under
    ``/var/run/netns``, see :mod:`ergo_py.testing.netns`).

    For mypy the forwarded members have ``gen.Node``'s signatures, but as the
    class has an ``Any`` base, a misspelt attribute of it goes unreported.
    """

    def __init__(
        self,
        name: str,
        options: NodeOptions | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        control_timeout: float = DEFAULT_CONTROL_TIMEOUT,
        stop_timeout: float | None = None,
        netns: str | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise ErrIncorrect(f"node name must be str, not {type(name).__name__}")
        options = options if options is not None else NodeOptions()
        if any(a.cert_manager is not None for a in options.network.acceptors):
            raise ErrUnsupported(
                "a node in a process cannot use per-acceptor cert managers; "
                "set NodeOptions.cert_manager instead"
            )
        self._name = Atom(name)
        self._netns = netns
        self._web_hosts = {
            "node.metrics_port": options.metrics.host if options.metrics else "",
            "node.observer_port": options.observer.host if options.observer else "",
        }
        self._relays: dict[str, Relay] = {}  # op -> the relay forwarding that port (netns)
        self._relays_lock = threading.Lock()
        self._cam = options.cert_manager
        self._control_timeout = control_timeout
        self._stop_timeout = (
            options.shutdown_timeout + _STOP_MARGIN if stop_timeout is None else stop_timeout
        )
        spec = _StartSpec(
            name=name,
            options=dataclasses.replace(options, cert_manager=None),
            certs=_CertSnapshot.of(self._cam) if self._cam is not None else None,
            log_level=logging.getLogger().getEffectiveLevel(),
            log_json=json_configured(),
        )
        try:
            pickle.dumps(spec)
        except Exception as exc:
            raise ErrIncorrect(f"options for {name} cannot be sent to a process: {exc}") from exc

        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[tuple[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._gone = False
        self._unsubscribe: Callable[[], None] | None = None
        self._conn, child_conn = _SPAWN.Pipe(duplex=True)
        self._process = _SPAWN.Process(
            target=_child_main, args=(child_conn, netns), name=f"ergo-node {name}", daemon=True
        )
        self._process.start()
        child_conn.close()  # ours; the child's copy is what closes on its exit
        self._reader = threading.Thread(
            target=self._read, name=f"ergo-control-reader {name}", daemon=True
        )
        self._reader.start()
        if self._cam is not None:
            # Before ``start``: a change made meanwhile is queued behind it, not lost.
            self._unsubscribe = self._cam.subscribe(self._forward_certs)
        try:
            pid, creation = self._request("start", (spec,), timeout=start_timeout)
        except BaseException as exc:
            self.kill()
            if isinstance(exc, ErrNodeProcessExited):
                exc.add_note(
                    "it ended while starting: its stderr says why (with spawn, the main "
                    "module must be importable and guard its code by __name__ == '__main__')"
                )
            raise
        self._pid: PID = pid
        self._creation: int = creation
        self._network = _ProcessNetwork(self)
        log.info("node %s started in process %d", name, self._process.pid)

    # -- the control channel

    def _request(
        self,
        op: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run ``op(*args, **kwargs)`` in the child; its result, or its error raised here.

        ``timeout`` bounds the wait (default: ``control_timeout``); it is not
        taken from ``kwargs``, which go to the child as given.
        """
        bound = self._control_timeout if timeout is None else timeout
        try:
            blob = pickle.dumps((args, kwargs or {}))
        except Exception as exc:
            raise ErrUnsupportedType(f"{op}: cannot send this to node {self._name}: {exc}") from exc
        future: concurrent.futures.Future[tuple[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if self._gone:
                raise self._exited()
            req_id = next(self._ids)
            self._pending[req_id] = future
        try:
            with self._send_lock:
                self._conn.send_bytes(pickle.dumps((req_id, op, blob)))
            kind, payload = future.result(bound)
        except concurrent.futures.TimeoutError:
            raise ErrTimeout(f"node {self._name}: no answer to {op} within {bound} s") from None
        except (OSError, ValueError):
            raise self._exited() from None
        finally:
            with self._lock:
                self._pending.pop(req_id, None)
        if kind == "ok":
            try:
                return pickle.loads(payload)
            except Exception as exc:
                raise ErrUnsupportedType(
                    f"{op}: the answer from node {self._name} does not unpickle here: {exc}"
                ) from exc
        raise _error_from(kind, payload)

    def _read(self) -> None:
        """Reader thread: route answers to waiting callers until the child ends."""
        conn, sentinel = self._conn, self._process.sentinel
        try:
            while True:
                ready = wait([conn, sentinel])
                if conn not in ready:
                    break  # ended, and nothing left to read
                req_id, kind, payload = pickle.loads(conn.recv_bytes())
                with self._lock:
                    future = self._pending.get(req_id)
                if future is not None and not future.done():
                    future.set_result((kind, payload))
        except (EOFError, OSError, ValueError):
            pass
        except Exception:
            log.exception("control channel of node %s failed", self._name)
        # Let it finish exiting first (bounded: a child that closed its pipe is
        # exiting) so the error can say how it ended.
        self._wait_ended(1.0)
        self._mark_gone()

    def _mark_gone(self) -> None:
        with self._lock:
            self._gone = True
            pending = list(self._pending.values())
        error = self._exited()
        for future in pending:
            if not future.done():
                future.set_exception(error)

    def _exited(self) -> ErrNodeProcessExited:
        return ErrNodeProcessExited(self._name, self._process.exitcode)

    def _forward_certs(self, state: CertState) -> None:
        assert self._cam is not None
        try:
            self._request("certs", (_CertSnapshot.of(self._cam, state),))
        except ErrNodeTerminated:
            log.debug("node %s has ended: certificate change not forwarded", self._name)

    # -- extras for tests

    @property
    def process(self) -> multiprocessing.process.BaseProcess:
        """The child process (``.pid`` is its OS process id; ``.exitcode`` once ended)."""
        return self._process

    def sync_certs(self) -> None:
        """Make sure the child's cert manager has the parent-side manager's current state.

        Certificate changes are forwarded as they happen; this raises
        (``ErrNodeProcessExited``, ``gen.CertificateError``, ...) if that failed.
        """
        if self._cam is None:
            raise ErrUnsupported(f"node {self._name} runs without a cert manager")
        self._request("certs", (_CertSnapshot.of(self._cam),))

    @property
    def stop_bound(self) -> float:
        """The longest :meth:`stop` may take (graceful stop, then kill, then reaping)."""
        return 2 * self._stop_timeout + 2 * _KILL_WAIT

    def kill(self) -> None:
        """SIGKILL the child: a crash, as its peers see it (idempotent; returns once reaped)."""
        if not self._wait_ended(0):
            self._process.kill()
        if not self._wait_ended(_KILL_WAIT):
            log.error("node %s: process %s survived SIGKILL", self._name, self._process.pid)
        self._close_channel()

    def _wait_ended(self, timeout: float | None) -> bool:
        """True once the child has ended (then it is reaped: no zombie is left).

        Watches the sentinel, which the kernel closes when the child ends,
        rather than polling ``is_alive()``: several threads reaping one child
        race (the loser sees "no such child" and would take it for alive).
        """
        if not wait([self._process.sentinel], timeout):
            return False
        # The sentinel closes as the child's files do, a moment before it can
        # be reaped: a blocking (and bounded) join, not a WNOHANG poll.
        self._process.join(_KILL_WAIT)
        return True

    def _web_port(self, op: str) -> int | None:
        """The child's port for ``op``; relayed here if the child is in a namespace."""
        port: int | None = self._request(op)
        if port is None or self._netns is None:
            return port
        from ergo_py.testing.relay import Relay

        host = self._web_hosts[op]
        target = (host if host not in ("", "0.0.0.0") else "127.0.0.1", port)
        with self._relays_lock:
            if self._gone:
                raise self._exited()
            relay = self._relays.get(op)
            if relay is None or relay.target != target:
                if relay is not None:
                    relay.close()
                relay = Relay(target, target_netns=self._netns, name=f"{self._name} {op}")
                self._relays[op] = relay
            return relay.port

    def metrics_port(self) -> int | None:
        """The port ``/metrics`` answers on, reachable from this process (None: not served)."""
        return self._web_port("node.metrics_port")

    def observer_port(self) -> int | None:
        """The observer's port, reachable from this process (None: not served)."""
        return self._web_port("node.observer_port")

    def _close_channel(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._mark_gone()
        with self._relays_lock:  # after: no relay is made once gone
            relays, self._relays = list(self._relays.values()), {}
        for relay in relays:
            relay.close()
        self._reader.join(_KILL_WAIT)  # leaves once the child's sentinel fires
        self._conn.close()

    # -- gen.Node: what is not simply forwarded

    def _forward(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._request(op, args, kwargs)

    def call(self, to: Target, request: Any, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Any:
        bound = self._control_timeout + (timeout if timeout is not None else 0.0)
        return self._request("node.call", (to, request, timeout), timeout=bound)

    def is_alive(self) -> bool:
        if self._gone or self._wait_ended(0):
            return False
        try:
            alive: bool = self._request("node.is_alive")
        except ErrNodeTerminated:
            return False
        return alive

    def network(self) -> Network:
        return self._network

    def stop(self) -> None:
        """Stop the node gracefully and wait for the child to exit; SIGKILL it past the bound."""
        if not self._gone:
            try:
                self._request("stop", timeout=self._stop_timeout)
            except ErrNodeTerminated:
                pass  # ended already
            except ErgoError as exc:
                log.warning("node %s did not stop cleanly (%s): killing it", self._name, exc)
        if not self._wait_ended(self._stop_timeout):
            log.warning("node %s did not exit in time: killing it", self._name)
        self.kill()

    def wait(self, timeout: float | None = None) -> bool:
        return self._wait_ended(timeout)

    def __repr__(self) -> str:
        state = "exited" if self._gone else "running"
        return f"ProcessNode({self._name!r}, os pid {self._process.pid}, {state})"


class _ProcessRemoteNode(RemoteNode):
    def __init__(self, node: ProcessNode, name: str, creation: int) -> None:
        self._node = node
        self._name = Atom(name)
        self._creation = creation

    def spawn(self, name: str, *args: Any, options: ProcessOptions | None = None) -> PID:
        pid: PID = self._node._request("remote.spawn", (str(self._name), name, args, options))
        return pid

    def disconnect(self) -> None:
        self._node._request("remote.disconnect", (str(self._name),))


class _ProcessNetwork(_NetworkForwarders, Network):  # type: ignore[misc]  # as ProcessNode
    """``network()`` of a :class:`ProcessNode`: each member runs in the child.

    All but ``get_node`` are forwarded as generated from ``gen.Network``.
    """

    def __init__(self, node: ProcessNode) -> None:
        self._node = node

    def _forward(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._node._request(op, args, kwargs)

    def get_node(self, name: str) -> RemoteNode:
        peer, creation = self._node._request("net.get_node", (name,))
        return _ProcessRemoteNode(self._node, peer, creation)

    def registrar(self) -> Registrar | None:
        """A view of the child's registrar: ``nodes()`` runs in the child (None: it has none)."""
        if self._node._request("net.registrar_nodes") is None:
            return None
        return _ProcessRegistrar(self._node)


class _ProcessRegistrar:
    """``network().registrar()`` of a :class:`ProcessNode`: only ``nodes`` crosses over."""

    def __init__(self, node: ProcessNode) -> None:
        self._node = node

    async def start(self, node_name: str, routes: Sequence[Route]) -> None:
        raise ErrUnsupported("the registrar runs in the node's process")

    async def resolve(self, node_name: str) -> list[Route]:
        raise ErrUnsupported("the registrar runs in the node's process")

    def nodes(self) -> list[str]:
        names: list[str] = self._node._request("net.registrar_nodes") or []
        return names

    async def close(self) -> None:
        raise ErrUnsupported("the registrar runs in the node's process")
