"""``ergo-py node run CONFIG.toml``: a node from a config file.

The node's certificate, key and CA pools come from PEM files that a
``lib.reload.CertReloader`` watches (file-system events; SIGHUP forces a
reload; a set that does not parse or validate is never applied): when a
rotation tool rewrites them, new
handshakes use the new certificate (and, with ``reconnect_on_rotate``, every
live connection moves onto it at once, without a gap). A process registered
as ``ergo_py_inspect`` answers ``ergo-py inspect`` with the node's connections
and certificate state. SIGINT/SIGTERM stop the node cleanly.

A bad config file (unknown key, wrong type, bad value) is reported in one line
naming the key, with exit status 2. See ``examples/node.toml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any

from ergo_py import act, gen
from ergo_py._version import __version__
from ergo_py.gen.certmanager import CertState, verify_mode_for
from ergo_py.lib.certfiles import MAX_POLL_INTERVAL
from ergo_py.lib.reload import CertReloader

__all__ = [
    "INSPECT_PROCESS",
    "ConfigError",
    "Inspector",
    "NodeConfig",
    "add_parser",
    "inspect_report",
    "load_config",
    "plain",
    "run_node",
]

log = logging.getLogger(__name__)

INSPECT_PROCESS = "ergo_py_inspect"
"""The name the inspection process is registered under (by default)."""

_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LOG_LEVELS["error"] = logging.ERROR


class ConfigError(gen.ErrIncorrect):
    """A config file that cannot be used; the message names the file and the key."""


# ---------------------------------------------------------------------------
# the config


@dataclass
class AcceptorConfig:
    """``port_range`` 1: exactly ``port`` (a config names its ports; Ergo tries 50)."""

    host: str = ""
    port: int = gen.DEFAULT_PORT
    port_range: int = 1


@dataclass
class RouteConfig:
    match: str
    host: str
    port: int
    tls: bool | None = None
    cookie: str | None = None
    weight: int = 0


@dataclass
class TLSConfig:
    cert: Path
    key: Path
    client_cas: Path | None = None
    root_cas: Path | None = None
    client_auth: gen.ClientAuth = gen.ClientAuth.NO_CLIENT_CERT
    server_name: str = ""
    poll_interval: float = 1.0
    insecure_skip_verify: bool = False


@dataclass
class NodeConfig:
    """A parsed, checked config file (paths resolved against its directory)."""

    path: Path
    name: str
    cookie: str
    log_level: int = logging.INFO
    reconnect_on_rotate: bool = False
    acceptors: list[AcceptorConfig] = field(default_factory=list)
    tls: TLSConfig | None = None
    routes: list[RouteConfig] = field(default_factory=list)
    registrar_enabled: bool = True
    registrar_port: int = gen.NetworkOptions.registrar_port
    registrar_resolve_host: str | None = ""
    inspect_enabled: bool = True
    inspect_process: str = INSPECT_PROCESS
    inspect_cert: Path | None = None
    inspect_key: Path | None = None

    def node_options(self, manager: gen.CertManager | None) -> gen.NodeOptions:
        """The options ``start_node`` gets for this config (with ``manager`` for TLS)."""
        options = gen.NodeOptions()
        options.cert_manager = manager
        net = options.network
        net.cookie = self.cookie
        net.acceptors = [
            gen.AcceptorOptions(host=a.host, port=a.port, port_range=a.port_range)
            for a in self.acceptors
        ]
        net.registrar_enabled = self.registrar_enabled
        net.registrar_port = self.registrar_port
        net.registrar_resolve_host = self.registrar_resolve_host
        if self.tls is not None:
            net.insecure_skip_verify = self.tls.insecure_skip_verify
        return options


class _Table:
    """One TOML table being read: typed getters, and a check for keys nobody read."""

    def __init__(self, data: object, where: str, file: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {where} must be a table")
        self._data: dict[str, Any] = dict(data)
        self.where = where
        self.file = file

    def error(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where}{key}: {why}")

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        return self._data.pop(key, None)

    def get_str(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        if key not in self._data:
            if required or default is None:
                raise self.error(key, "missing")
            return default
        value = self._data.pop(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_toml_type(value)}")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._data.pop(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_toml_type(value)}")
        return value

    def get_int(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self._data.pop(key, default)
        if type(value) is not int:
            raise self.error(key, f"must be an integer, not {_toml_type(value)}")
        if not lo <= value <= hi:
            raise self.error(key, f"must be in {lo}..{hi}, not {value}")
        return value

    def get_float(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self._data.pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {_toml_type(value)}")
        if not lo < value <= hi:
            raise self.error(key, f"must be > {lo} and <= {hi}, not {value}")
        return float(value)

    def get_path(self, key: str) -> Path | None:
        """A file path (relative ones are taken from the config file's directory)."""
        return self.req_path(key) if key in self._data else None

    def req_path(self, key: str) -> Path:
        text = self.get_str(key, required=True)
        if not text:
            raise self.error(key, "must not be empty")
        p = Path(text).expanduser()
        return p if p.is_absolute() else self.file.parent / p

    def get_table(self, key: str) -> _Table | None:
        if key not in self._data:
            return None
        return _Table(self._data.pop(key), f"{self.where}{key}.", self.file)

    def get_tables(self, key: str) -> list[_Table]:
        if key not in self._data:
            return []
        value = self._data.pop(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be an array of tables ([[{key}]]), not a single value")
        return [_Table(v, f"{self.where}{key}[{i}].", self.file) for i, v in enumerate(value)]

    def done(self) -> None:
        if self._data:
            keys = ", ".join(sorted(self._data))
            raise ConfigError(f"{self.file}: unknown key(s) in {self.where or 'top level'}: {keys}")


def _toml_type(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), "a table" if isinstance(value, dict) else "an array"
    )


def _check_name(name: str, t: _Table, key: str) -> str:
    local, sep, host = name.partition("@")
    if not sep or not local or not host or "@" in host:
        raise t.error(key, f"must look like name@host, not {name!r}")
    return name


def _parse_host_port(t: _Table, default_host: str, lowest_port: int) -> tuple[str, int]:
    return t.get_str("host", default_host), t.get_int("port", gen.DEFAULT_PORT, lowest_port, 65535)


def _parse_tls(t: _Table) -> TLSConfig:
    cert, key = t.req_path("cert"), t.req_path("key")
    client_cas, root_cas = t.get_path("client_cas"), t.get_path("root_cas")
    default_auth = "require_and_verify_client_cert" if client_cas else "no_client_cert"
    mode_name = t.get_str("client_auth", default_auth)
    try:
        mode = gen.ClientAuth[mode_name.upper()]
        verify_mode_for(mode)
    except KeyError:
        names = ", ".join(m.name.lower() for m in gen.ClientAuth)
        raise t.error("client_auth", f"{mode_name!r} is not one of {names}") from None
    except gen.ErrUnsupported:
        raise t.error(
            "client_auth",
            f"{mode_name} is not supported (Python's ssl verifies every client certificate "
            "it asks for): use verify_client_cert_if_given or require_and_verify_client_cert",
        ) from None
    tls = TLSConfig(
        cert=cert,
        key=key,
        client_cas=client_cas,
        root_cas=root_cas,
        client_auth=mode,
        server_name=t.get_str("server_name", ""),
        poll_interval=t.get_float("poll_interval", 1.0, 0.0, MAX_POLL_INTERVAL),
        insecure_skip_verify=t.get_bool("insecure_skip_verify", False),
    )
    t.done()
    return tls


def _parse_cookie(t: _Table) -> str:
    if t.has("cookie") and t.has("cookie_env"):
        raise t.error("cookie", "give cookie or cookie_env, not both")
    if t.has("cookie_env"):
        var = t.get_str("cookie_env")
        value = os.environ.get(var)
        if not value:
            raise t.error("cookie_env", f"environment variable {var} is not set or empty")
        return value
    cookie = t.get_str("cookie", required=True)
    if not cookie:
        raise t.error("cookie", "must not be empty")
    return cookie


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and check a node config file; ConfigError (one line, naming the key) if bad."""
    file = Path(path)
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    top = _Table(data, "", file)
    node = top.get_table("node")
    if node is None:
        raise ConfigError(f"{file}: missing the [node] table")
    name = _check_name(node.get_str("name", required=True), node, "name")
    level_name = node.get_str("log_level", "info").lower()
    if level_name not in _LOG_LEVELS:
        raise node.error("log_level", f"{level_name!r} is not one of {', '.join(_LOG_LEVELS)}")
    config = NodeConfig(
        path=file,
        name=name,
        cookie=_parse_cookie(node),
        log_level=_LOG_LEVELS[level_name],
        reconnect_on_rotate=node.get_bool("reconnect_on_rotate", False),
    )
    node.done()
    for a in top.get_tables("acceptors"):
        host, port = _parse_host_port(a, name.partition("@")[2], 0)
        config.acceptors.append(AcceptorConfig(host, port, a.get_int("port_range", 1, 0, 65535)))
        a.done()
    tls = top.get_table("tls")
    config.tls = _parse_tls(tls) if tls is not None else None
    for r in top.get_tables("routes"):
        match = r.get_str("match", required=True)
        host, port = _parse_host_port(r, "", 1)
        if not host:
            raise r.error("host", "missing")
        tls_flag = r.raw("tls")
        if tls_flag is not None and not isinstance(tls_flag, bool):
            raise r.error("tls", f"must be true or false, not {_toml_type(tls_flag)}")
        cookie = r.get_str("cookie") if r.has("cookie") else None
        weight = r.get_int("weight", 0, -1000000, 1000000)
        config.routes.append(RouteConfig(match, host, port, tls_flag, cookie, weight))
        r.done()
    reg = top.get_table("registrar")
    if reg is not None:
        config.registrar_enabled = reg.get_bool("enabled", True)
        config.registrar_port = reg.get_int("port", config.registrar_port, 1, 65535)
        remote = reg.get_bool("resolve_remote", True)
        config.registrar_resolve_host = reg.get_str("resolve_host", "") if remote else None
        reg.done()
    ins = top.get_table("inspect")
    if ins is not None:
        config.inspect_enabled = ins.get_bool("enabled", True)
        config.inspect_process = ins.get_str("process", INSPECT_PROCESS)
        config.inspect_cert, config.inspect_key = ins.get_path("cert"), ins.get_path("key")
        if (config.inspect_cert is None) != (config.inspect_key is None):
            raise ins.error("cert", "give both cert and key, or neither")
        ins.done()
    top.done()
    _check_routes(config)
    return config


def _check_routes(config: NodeConfig) -> None:
    for i, r in enumerate(config.routes):
        try:
            re.compile(r.match)
        except re.error as exc:
            raise ConfigError(f"{config.path}: routes[{i}].match: bad pattern: {exc}") from None


# ---------------------------------------------------------------------------
# inspection


def plain(value: Any) -> Any:
    """``value`` as plain msgpack/JSON data: dicts with str keys, lists, str, numbers, None."""
    if isinstance(value, Enum):  # before int: IntEnum is an int
        return value.name
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)  # Atom -> str
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def cert_report(state: CertState) -> dict[str, Any]:
    """A manager's current certificate and trust settings, as plain data."""
    cert = state.certificate

    def pool(p: gen.CertPool | None) -> list[str] | None:
        return None if p is None else list(p.fingerprints)

    return {
        "fingerprint": cert.fingerprint,
        "version": state.version,
        "generation": state.generation,
        "subject": cert.subject,
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "node_names": list(cert.node_names),
        "client_auth": state.client_auth.name,
        "client_cas": pool(state.client_cas),
        "root_cas": pool(state.root_cas),
        "server_name": state.server_name,
    }


def inspect_report(
    node: gen.Node, manager: gen.CertManager | None, watcher: CertReloader | None = None
) -> dict[str, Any]:
    """What ``ergo-py inspect`` shows: connections, certificate state, file watcher."""
    network = node.network()
    try:
        observer: dict[str, Any] | None = node.observer_snapshot()
    except gen.ErrUnsupported:
        observer = None
    peers = []
    for peer in sorted(network.nodes()):
        try:
            peers.append(plain(network.info(peer)))
        except gen.ErrNoConnection:
            continue  # went away between nodes() and info()
    return {
        "node": str(node.name),
        "ergo_py_version": __version__,
        "tls": manager is not None,
        "cert": cert_report(manager.state()) if manager is not None else None,
        "watcher": (
            None
            if watcher is None
            else {**watcher.files, "reloads": watcher.reloads, "last_error": watcher.last_error}
        ),
        "peers": peers,
        "observer": observer,  # the observer page's snapshot: health, events, processes
    }


class Inspector(act.Actor):
    """Answers every call with :func:`inspect_report` (read-only; the request is ignored)."""

    def init(self, *args: Any) -> None:
        self._manager: gen.CertManager | None = args[0] if args else None
        self._watcher: CertReloader | None = args[1] if len(args) > 1 else None

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        log.debug("inspection requested by %s", sender)
        return inspect_report(self.node, self._manager, self._watcher)


# ---------------------------------------------------------------------------
# running


def _reconnect_all(node: gen.Node) -> None:
    network = node.network()
    for peer in network.nodes():
        try:
            network.reconnect(peer)
            log.info("moved the connection to %s onto the new certificate", peer)
        except gen.ErgoError as exc:
            log.warning(
                "could not move the connection to %s onto the new certificate (it keeps the "
                "old one until it closes; a peer needs a route for this): %s",
                peer,
                exc,
            )


def run_node(
    config: NodeConfig, stop: threading.Event, *, reconnect_on_rotate: bool | None = None
) -> int:
    """Run the node described by ``config`` until ``stop`` is set or the node stops.

    Returns the exit status (0). Startup errors (files, ports, options) raise
    ``gen.ErgoError``/``OSError`` after undoing what was started.
    """
    from ergo_py import start_node

    reconnect = config.reconnect_on_rotate if reconnect_on_rotate is None else reconnect_on_rotate
    holder: list[gen.Node] = []

    def on_reload(state: CertState) -> None:
        log.info(
            "certificate files applied: version %d, %.16s",
            state.version,
            state.certificate.fingerprint,
        )
        if reconnect and holder:
            _reconnect_all(holder[0])

    watcher: CertReloader | None = None
    manager: gen.CertManager | None = None
    if config.tls is not None:
        tls = config.tls
        watcher = CertReloader(  # lib/reload.py: file-system events, validated, SIGHUP
            tls.cert,
            tls.key,
            client_ca_file=tls.client_cas,
            root_ca_file=tls.root_cas,
            retry=tls.poll_interval,
            on_reload=on_reload,
        )
        cam = watcher.manager
        if not isinstance(cam, gen.CertAuthManager):  # the watcher made one: cannot happen
            raise gen.ErrIncorrect("the certificate file watcher has no CertAuthManager")
        cam.set_client_auth(tls.client_auth)
        if tls.server_name:
            cam.set_server_name(tls.server_name)
        manager = cam
    node = start_node(config.name, config.node_options(manager))
    holder.append(node)
    try:
        network = node.network()
        for r in config.routes:
            route = gen.NetworkRoute(host=r.host, port=r.port, tls=r.tls, cookie=r.cookie)
            network.add_route(r.match, route, r.weight)
        if config.inspect_enabled:
            node.spawn_register(config.inspect_process, Inspector, manager, watcher)
        if watcher is not None:
            watcher.start()
            watcher.install_sighup()  # until watcher.stop()
        log.info(
            "node %s running (%s; accepting on %s; inspect process: %s)",
            node.name,
            f"TLS, cert {manager.get_certificate().fingerprint[:16]}" if manager else "plain TCP",
            ", ".join(f"{a.host}:{a.port}" for a in network.acceptors()) or "nothing",
            config.inspect_process if config.inspect_enabled else "off",
        )
        while not stop.wait(0.5):
            if not node.is_alive():
                log.warning("node %s stopped by itself", node.name)
                break
    finally:
        if watcher is not None:
            watcher.stop()
        node.stop()
        log.info("node %s stopped", node.name)
    return 0


def _install_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop``; returns a callable restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger().setLevel(config.log_level)
    stop = threading.Event()
    restore = _install_signals(stop)
    try:
        return run_node(config, stop, reconnect_on_rotate=args.reconnect_on_rotate or None)
    finally:
        restore()


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{config.path}: ok (node {config.name})")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("node", help="run a node from a config file")
    nsub = p.add_subparsers(dest="node_command", required=True)
    r = nsub.add_parser(
        "run", help="run a node; reloads its certificate files when they change (SIGTERM stops)"
    )
    r.add_argument("config", help="the node's TOML config (see examples/node.toml)")
    r.add_argument(
        "--reconnect-on-rotate",
        action="store_true",
        help="after new certificate files are applied, move every live connection onto them",
    )
    r.set_defaults(run=_run)
    c = nsub.add_parser("check", help="check a config file and exit")
    c.add_argument("config")
    c.set_defaults(run=_check)
