"""``ergo-py node run CONFIG.toml``: a node from a config file, hosting the user's actors.

The node's certificate, key and CA pools come from PEM files that a
``lib.reload.CertReloader`` watches (file-system events; SIGHUP forces a
reload; a set that does not parse or validate is never applied): when a
rotation tool rewrites them, new
handshakes use the new certificate (and, with ``reconnect_on_rotate``, every
live connection moves onto it at once, without a gap). Each ``[[actors]]``
entry (``factory = "module:Class"``, ``name``, ``args``) is spawned and
registered at start, so the node does real work; ``ergo-py send`` / ``call``
reach those processes. A process registered as ``ergo_py_inspect`` answers
``ergo-py inspect`` with the node's connections and certificate state.
SIGINT/SIGTERM stop the node cleanly.

``run_node`` is a sequence of small steps (TLS from files, start, routes,
actors, inspection, watch) so that another step, e.g. watching more files,
is one call in it. The config itself is :mod:`ergo_py.cli.config`.
"""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import click

from ergo_py import act, gen
from ergo_py._version import __version__
from ergo_py.cli.config import (
    INSPECT_PROCESS,
    ActorConfig,
    ConfigError,
    NodeConfig,
    load_config,
)
from ergo_py.gen.certmanager import CertState
from ergo_py.lib.logs import configure_logging
from ergo_py.lib.reload import CertReloader
from ergo_py.node.observer_page import plain

__all__ = [
    "INSPECT_PROCESS",
    "ConfigError",
    "Inspector",
    "NodeConfig",
    "inspect_report",
    "load_config",
    "load_factory",
    "plain",
    "run_node",
    "tls_from_files",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# inspection


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
        # Objects in gc.freeze()'s permanent generation (node.gc_freeze).
        "gc_frozen": gc.get_freeze_count(),
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
# the user's actors


def load_factory(config: NodeConfig, index: int, actor: ActorConfig) -> gen.ActorFactory:
    """Import ``module:Class`` of ``[[actors]]`` entry ``index`` (``node.pythonpath`` first)."""
    for p in reversed(config.pythonpath):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    where = f"{config.path}: actors[{index}].factory"
    module_name, _, attr = actor.factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{where}: cannot import {module_name!r} ({exc}). Fix: put its directory in "
            "node.pythonpath (relative to the config file) or install it"
        ) from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"{where}: module {module_name!r} has no {attr!r}")
    if not (isinstance(target, type) and issubclass(target, act.Actor)):
        raise ConfigError(f"{where}: {actor.factory} is not an ergo_py.act.Actor subclass")
    factory: gen.ActorFactory = target
    return factory


def spawn_actors(node: gen.Node, config: NodeConfig) -> None:
    """Spawn and register every ``[[actors]]`` entry, in order (the first error stops it)."""
    for i, actor in enumerate(config.actors):
        factory = load_factory(config, i, actor)
        try:
            pid = node.spawn_register(actor.name, factory, *actor.args)
        except gen.ErrTaken:
            raise ConfigError(f"{config.path}: actors[{i}].name: {actor.name!r} is taken") from None
        except Exception as exc:
            raise ConfigError(
                f"{config.path}: actors[{i}]: {actor.factory} failed to start with args "
                f"{actor.args!r}: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("spawned %s as %r (%s)", actor.factory, actor.name, pid)


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


def tls_from_files(
    config: NodeConfig, on_reload: Callable[[CertState], None]
) -> tuple[gen.CertAuthManager | None, CertReloader | None]:
    """The node's cert manager, loaded from (and kept in step with) the config's files."""
    if config.tls is None:
        return None, None
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
    return cam, watcher


def run_node(
    config: NodeConfig,
    stop: threading.Event,
    *,
    reconnect_on_rotate: bool | None = None,
    gc_freeze: bool | None = None,
    started: Callable[[gen.Node], None] | None = None,
) -> int:
    """Run the node described by ``config`` until ``stop`` is set or the node stops.

    Returns the exit status (0). Startup errors (files, ports, options,
    actors) raise ``gen.ErgoError``/``OSError`` after undoing what was
    started. ``started(node)`` runs once everything is up.

    ``gc_freeze`` (default: the config's ``node.gc_freeze``): once the node
    and its actors are up, collect and ``gc.freeze()`` what exists, so that
    the collector's full passes no longer walk the modules and objects made
    at start-up (under load they took up to half a receiving node's time;
    docs/perf-round2.md). Process-wide, so only for the process this
    function owns; undone (``gc.unfreeze()``) when the node stops.
    """
    from ergo_py import start_node
    from ergo_py.cli.checks import check_files

    reconnect = config.reconnect_on_rotate if reconnect_on_rotate is None else reconnect_on_rotate
    holder: list[gen.Node] = []

    def on_reload(state: CertState) -> None:
        log.info(
            "certificate files applied: version %d, %.16s",
            state.version,
            state.certificate.fingerprint,
        )
        for finding in check_files(config):  # what peers will make of the new files
            log.warning("the new certificate files will not work: %s", finding)
        if reconnect and holder:
            _reconnect_all(holder[0])

    manager, watcher = tls_from_files(config, on_reload)
    node = start_node(config.name, config.node_options(manager))
    holder.append(node)
    frozen = False
    try:
        network = node.network()
        for r in config.routes:
            route = gen.NetworkRoute(host=r.host, port=r.port, tls=r.tls, cookie=r.cookie)
            network.add_route(r.match, route, r.weight)
        spawn_actors(node, config)
        if config.inspect_enabled:
            node.spawn_register(config.inspect_process, Inspector, manager, watcher)
        if watcher is not None:
            watcher.start()
            watcher.install_sighup()  # until watcher.stop()
        log.info(
            "node %s running (%s; accepting on %s; actors: %s; inspect process: %s)",
            node.name,
            f"TLS, cert {manager.get_certificate().fingerprint[:16]}" if manager else "plain TCP",
            ", ".join(f"{a.host}:{a.port}" for a in network.acceptors()) or "nothing",
            ", ".join(a.name for a in config.actors) or "none",
            config.inspect_process if config.inspect_enabled else "off",
        )
        frozen = _freeze(config.gc_freeze if gc_freeze is None else gc_freeze)
        if started is not None:
            started(node)
        while not stop.wait(0.5):
            if not node.is_alive():
                log.warning("node %s stopped by itself", node.name)
                break
    finally:
        if watcher is not None:
            watcher.stop()
        node.stop()
        if frozen:
            gc.unfreeze()
        log.info("node %s stopped", node.name)
    return 0


def _freeze(enabled: bool) -> bool:
    """``gc.freeze()`` after a collection (when ``enabled``); whether it froze."""
    if not enabled:
        log.info("gc.freeze() off (node.gc_freeze)")
        return False
    gc.collect()
    gc.freeze()
    log.info(
        "gc.freeze(): %d objects made at start-up left to the collector", gc.get_freeze_count()
    )
    return True


def install_signals(stop: threading.Event) -> Callable[[], None]:
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


# ---------------------------------------------------------------------------
# the commands

_SET = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="TABLE.KEY=VALUE",
    help="Override a config value (repeatable; after ERGO_PY_TABLE__KEY variables), "
    "e.g. --set node.log_level=debug.",
)
_CONFIG = click.argument("config", type=click.Path(dir_okay=False))


@click.group("node")
def group() -> None:
    """Run or check a node described by a TOML config file."""


@group.command("run")
@_CONFIG
@_SET
@click.option(
    "--reconnect-on-rotate",
    is_flag=True,
    help="After new certificate files are applied, move every live connection onto them.  "
    "[default: node.reconnect_on_rotate]",
)
@click.option(
    "--gc-freeze/--no-gc-freeze",
    default=None,
    help="Once the node is up, gc.freeze() what start-up made, so full garbage "
    "collections under load stop walking it.  [default: node.gc_freeze, else on]",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="Log lines as text or as one JSON object each (for log shippers).  "
    "[default: node.log_format, else text]",
)
def run_command(
    config: str,
    overrides: tuple[str, ...],
    reconnect_on_rotate: bool,
    gc_freeze: bool | None,
    log_format: str | None,
) -> None:
    """Run a node until SIGINT/SIGTERM; it reloads its certificate files when they change.

    CONFIG is the node's TOML file (see examples/a.toml); relative paths in
    it are taken from its directory.
    """
    from ergo_py.cli.checks import check_files

    cfg = load_config(config, overrides)
    configure_logging((log_format or cfg.log_format).lower(), cfg.log_level)
    findings = check_files(cfg)
    for f in findings:
        if not f.blocks_start:
            log.warning("%s", f)
    hard = [f for f in findings if f.blocks_start]
    if hard:
        for f in hard:
            click.echo(f"ergo-py: {f}", err=True)
        raise SystemExit(2)
    stop = threading.Event()
    restore = install_signals(stop)
    try:
        run_node(cfg, stop, reconnect_on_rotate=reconnect_on_rotate or None, gc_freeze=gc_freeze)
    finally:
        restore()


@group.command("check")
@_CONFIG
@_SET
@click.option(
    "--syntax-only",
    is_flag=True,
    help="Check the config's keys and values only, not the files it names.",
)
def check_command(config: str, overrides: tuple[str, ...], syntax_only: bool) -> None:
    """Check a config and the files it names, then exit (0: all good, 2: not).

    Checks: the keys and values; every file exists; each key matches its
    certificate; the certificate names the node; it verifies against the
    configured CA files (a real TLS handshake in memory); [[actors]] import.
    """
    from ergo_py.cli.checks import check_files, rel

    cfg = load_config(config, overrides)
    if not syntax_only:
        findings = check_files(cfg)
        for i, actor in enumerate(cfg.actors):
            try:
                load_factory(cfg, i, actor)
            except ConfigError as exc:
                click.echo(f"ergo-py: {exc}", err=True)
                raise SystemExit(2) from None
        if findings:
            for f in findings:
                click.echo(f"ergo-py: {f}", err=True)
            raise SystemExit(2)
    what = "syntax ok" if syntax_only else "ok"
    click.echo(f"{rel(cfg.path)}: {what} (node {cfg.name})")
