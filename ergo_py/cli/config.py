"""The node config: one pydantic schema, read from TOML, then environment, then command line.

Why pydantic: one declaration gives types, ranges, defaults and the list of
known keys (so a misspelt key is an error with a suggestion, not silently
ignored), and the CLI's ``config-schema`` output for free. Its settings
add-on binds a config file to the class, not to the file named on the
command line, and cannot say which source a bad value came from; the three
sources are merged here in a few lines instead, each value remembering
where it came from so an error can name it.

Sources, later ones win:

1. the TOML file (relative paths in it are taken from the file's directory);
2. environment variables ``ERGO_PY_<TABLE>__<KEY>``, e.g.
   ``ERGO_PY_NODE__LOG_LEVEL=debug`` or ``ERGO_PY_TLS__CERT=/dev/shm/a.pem``;
3. ``--set TABLE.KEY=VALUE`` on the command line.

A value from 2 or 3 is read as a TOML value when it parses as one (``11144``,
``true``, ``["a"]``) and as a string otherwise; relative paths there are taken
from the current directory. Every error is one line: where the value came
from (``FILE: table.key`` or the variable), what is wrong, and a suggestion.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ergo_py import gen
from ergo_py.gen.certmanager import verify_mode_for
from ergo_py.lib.certfiles import MAX_POLL_INTERVAL

__all__ = [
    "ENV_PREFIX",
    "INSPECT_PROCESS",
    "AcceptorConfig",
    "ActorConfig",
    "ConfigError",
    "NodeConfig",
    "RouteConfig",
    "TLSConfig",
    "load_config",
]

INSPECT_PROCESS = "ergo_py_inspect"
"""The name the inspection process is registered under (by default)."""

ENV_PREFIX = "ERGO_PY_"

_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class ConfigError(gen.ErrIncorrect):
    """A config that cannot be used; the message names the file or variable and the key."""


# ---------------------------------------------------------------------------
# the schema (mirrors the TOML file's tables)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken from the directory of the source that gave them."""
    value = value.expanduser()
    if value.is_absolute() or not str(value):
        return value
    base = (info.context or {}).get("base")
    return Path(base) / value if base is not None else value


FilePath = Annotated[Path, Field(strict=False), AfterValidator(_resolve)]


def _node_name(value: str) -> str:
    local, sep, host = value.partition("@")
    if not sep or not local or not host or "@" in host:
        raise ValueError(f"must look like name@host, not {value!r}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeSection(_Section):
    name: Annotated[str, AfterValidator(_node_name)]
    cookie: str | None = None
    cookie_env: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    reconnect_on_rotate: bool = False
    gc_freeze: bool = True
    pythonpath: list[FilePath] = []

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_cookie(self) -> NodeSection:
        if self.cookie is not None and self.cookie_env is not None:
            raise ValueError("give cookie or cookie_env, not both")
        if self.cookie is None and self.cookie_env is None:
            raise ValueError("cookie: missing (give cookie, or cookie_env naming a variable)")
        if self.cookie == "":
            raise ValueError("cookie: must not be empty")
        return self


class AcceptorSection(_Section):
    host: str | None = None  # default: the host part of the node name
    port: int = Field(gen.DEFAULT_PORT, ge=0, le=65535)
    port_range: int = Field(1, ge=0, le=65535)


class TLSSection(_Section):
    cert: FilePath
    key: FilePath
    client_cas: FilePath | None = None
    root_cas: FilePath | None = None
    client_auth: str | None = None
    server_name: str = ""
    poll_interval: float = Field(1.0, gt=0.0, le=MAX_POLL_INTERVAL)
    insecure_skip_verify: bool = False

    @field_validator("poll_interval", mode="before")
    @classmethod
    def _int_is_a_number(cls, value: Any) -> Any:
        return float(value) if type(value) is int else value

    @field_validator("client_auth")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            verify_mode_for(gen.ClientAuth[value.upper()])
        except KeyError:
            names = ", ".join(m.name.lower() for m in gen.ClientAuth)
            raise ValueError(f"{value!r} is not one of {names}") from None
        except gen.ErrUnsupported:
            raise ValueError(
                f"{value} is not supported (Python's ssl verifies every client certificate "
                "it asks for): use verify_client_cert_if_given or require_and_verify_client_cert"
            ) from None
        return value.lower()


class RouteSection(_Section):
    match: str
    host: str = Field(min_length=1)
    port: int = Field(gen.DEFAULT_PORT, ge=1, le=65535)
    tls: bool | None = None
    cookie: str | None = None
    weight: int = Field(0, ge=-1_000_000, le=1_000_000)

    @field_validator("match")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad pattern: {exc}") from None
        return value


class RegistrarSection(_Section):
    enabled: bool = True
    port: int = Field(gen.NetworkOptions.registrar_port, ge=1, le=65535)
    resolve_remote: bool = True
    resolve_host: str = ""


class InspectSection(_Section):
    enabled: bool = True
    process: str = INSPECT_PROCESS
    cert: FilePath | None = None
    key: FilePath | None = None

    @model_validator(mode="after")
    def _both(self) -> InspectSection:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both cert and key, or neither")
        return self


class ActorSection(_Section):
    """``[[actors]]``: a process the node spawns and registers at start."""

    name: str = Field(min_length=1)
    factory: str = Field(pattern=r"^[\w.]+:[\w.]+$")  # module:Class
    args: list[Any] = []


class ConfigFile(_Section):
    node: NodeSection
    acceptors: list[AcceptorSection] = []
    tls: TLSSection | None = None
    routes: list[RouteSection] = []
    registrar: RegistrarSection = RegistrarSection()
    inspect: InspectSection = InspectSection()
    actors: list[ActorSection] = []

    @model_validator(mode="after")
    def _unique_actor_names(self) -> ConfigFile:
        names = [a.name for a in self.actors]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"actors: the name {n!r} is registered twice")
        if self.inspect.enabled and self.inspect.process in names:
            raise ValueError(f"actors: {self.inspect.process!r} is the inspection process's name")
        return self


# ---------------------------------------------------------------------------
# the checked config the rest of the CLI uses


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
class ActorConfig:
    name: str
    factory: str
    args: list[Any] = field(default_factory=list)


@dataclass
class NodeConfig:
    """A parsed, checked config (paths resolved against the config file's directory)."""

    path: Path
    name: str
    cookie: str
    log_level: int = logging.INFO
    log_format: str = "text"  # lib.configure_logging's: text | json
    reconnect_on_rotate: bool = False
    gc_freeze: bool = True  # gc.freeze() once the node and its actors are up
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
    actors: list[ActorConfig] = field(default_factory=list)
    pythonpath: list[Path] = field(default_factory=list)

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


# ---------------------------------------------------------------------------
# reading


_PATH_KEYS = {("tls", k) for k in ("cert", "key", "client_cas", "root_cas")} | {
    ("inspect", "cert"),
    ("inspect", "key"),
}


def _value(text: str) -> Any:
    """A TOML value if ``text`` is one, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _override(
    data: dict[str, Any], dotted: str, raw: str, origin: str, origins: dict[tuple[str, ...], str]
) -> None:
    """Put ``raw`` at ``dotted`` (``table.key``) in ``data``; relative paths from the cwd."""
    parts = tuple(p for p in dotted.lower().split(".") if p)
    if len(parts) != 2:
        raise ConfigError(f"{origin}: expected TABLE.KEY (e.g. node.log_level), not {dotted!r}")
    table, key = parts
    known = {k for k, f in ConfigFile.model_fields.items() if f.annotation is not None}
    if table not in known:
        raise ConfigError(f"{origin}: unknown table {table!r}{_did_you_mean(table, known)}")
    section = data.setdefault(table, {})
    if isinstance(section, list):
        raise ConfigError(
            f"{origin}: [[{table}]] is a list of tables: change it in the config file"
        )
    value = _value(raw)
    if (table, key) in _PATH_KEYS and isinstance(value, str) and value:
        value = str(Path(value).expanduser().absolute())
    section[key] = value
    origins[(table, key)] = origin


def _env_overrides(environ: Mapping[str, str]) -> Iterable[tuple[str, str, str]]:
    """``(table.key, value, variable)`` for every ``ERGO_PY_TABLE__KEY`` variable."""
    for var, value in sorted(environ.items()):
        if var.startswith(ENV_PREFIX) and "__" in var:
            table, _, key = var[len(ENV_PREFIX) :].partition("__")
            yield f"{table}.{key}", value, f"environment variable {var}"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(loc: tuple[str | int, ...]) -> set[str]:
    """The known keys of the table at ``loc`` (for suggestions)."""
    model: Any = ConfigFile
    for part in loc:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(part)
        if f is None:
            return set()
        ann = f.annotation
        for arg in (ann, *getattr(ann, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
            inner = getattr(arg, "__args__", ())
            if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
                model = inner[0]
                break
        else:
            return set()
    return set(model.model_fields)


def _loc_text(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), "a table" if isinstance(value, dict) else "an array"
    )


def _error_line(err: Mapping[str, Any], file: Path, origins: Mapping[tuple[str, ...], str]) -> str:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind = err["type"]
    where = origins.get(tuple(str(p) for p in loc), f"{file}")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        hint = _did_you_mean(key, _fields_at(loc[:-1]))
        table = _loc_text(loc[:-1]) or "the top level"
        return f"{where}: {_loc_text(loc)}: unknown key in {table}{hint}"
    if kind == "missing":
        return f"{where}: {_loc_text(loc)}: missing (this key is required)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    key, colon, rest = msg.partition(": ")
    if kind == "value_error" and colon and key.isidentifier():  # a check on one key of a table
        loc, msg = (*loc, key), rest
        where = origins.get(tuple(str(p) for p in loc), where)
    if kind.endswith("_type") and "input" in err:
        msg = f"{msg}, not {_type_name(err['input'])}"
    elif "input" in err and kind not in ("value_error", "model_type"):
        msg = f"{msg}, not {err['input']!r}"
    return f"{where}: {_loc_text(loc) or 'config'}: {msg}"


def load_config(
    path: str | os.PathLike[str],
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Read ``path``, apply environment and ``TABLE.KEY=VALUE`` overrides, check it all.

    ConfigError (one line naming the source and the key, with a suggestion
    where one helps) if anything is wrong.
    """
    file = Path(path)
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    origins: dict[tuple[str, ...], str] = {}
    env = os.environ if environ is None else environ
    for dotted, value, origin in _env_overrides(env):
        _override(data, dotted, value, origin, origins)
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected TABLE.KEY=VALUE")
        _override(data, dotted.strip(), value.strip(), f"--set {dotted.strip()}", origins)
    try:
        model = ConfigFile.model_validate(data, context={"base": file.parent})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ConfigError(_error_line(first, file, origins)) from None
    return _checked(model, file, env)


def _checked(model: ConfigFile, file: Path, env: Mapping[str, str]) -> NodeConfig:
    node = model.node
    if node.cookie_env is not None:
        cookie = env.get(node.cookie_env, "")
        if not cookie:
            raise ConfigError(
                f"{file}: node.cookie_env: environment variable {node.cookie_env} is not set "
                "or empty (export it, or give node.cookie)"
            )
    else:
        cookie = node.cookie or ""
    host = node.name.partition("@")[2]
    tls = model.tls
    reg = model.registrar
    ins = model.inspect
    config = NodeConfig(
        path=file,
        name=node.name,
        cookie=cookie,
        log_level=_LOG_LEVELS[node.log_level],
        log_format=node.log_format,
        reconnect_on_rotate=node.reconnect_on_rotate,
        gc_freeze=node.gc_freeze,
        acceptors=[
            AcceptorConfig(a.host if a.host is not None else host, a.port, a.port_range)
            for a in model.acceptors
        ],
        routes=[
            RouteConfig(r.match, r.host, r.port, r.tls, r.cookie, r.weight) for r in model.routes
        ],
        registrar_enabled=reg.enabled,
        registrar_port=reg.port,
        registrar_resolve_host=reg.resolve_host if reg.resolve_remote else None,
        inspect_enabled=ins.enabled,
        inspect_process=ins.process,
        inspect_cert=ins.cert,
        inspect_key=ins.key,
        actors=[ActorConfig(a.name, a.factory, list(a.args)) for a in model.actors],
        pythonpath=list(node.pythonpath),
    )
    if tls is not None:
        default_auth = "require_and_verify_client_cert" if tls.client_cas else "no_client_cert"
        config.tls = TLSConfig(
            cert=tls.cert,
            key=tls.key,
            client_cas=tls.client_cas,
            root_cas=tls.root_cas,
            client_auth=gen.ClientAuth[(tls.client_auth or default_auth).upper()],
            server_name=tls.server_name,
            poll_interval=tls.poll_interval,
            insecure_skip_verify=tls.insecure_skip_verify,
        )
    return config
