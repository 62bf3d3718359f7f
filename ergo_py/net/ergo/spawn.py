"""Ergo's remote spawn on the wire: ``MessageSpawn`` and the options it carries (sans-IO).

A spawn request is one ``MessageSpawn{Name, Options gen.ProcessOptionsExtra,
Ref}`` packet; the answer is a ``MessageResult`` with the new PID (or the
error) under the same ref. The structs mirror Ergo's field for field, in
declaration order (``gen/process.go``, ``gen/node.go``), since EDF writes a
struct's fields untagged; named Go types travel as their base type
(``gen.Env`` as a string, ``gen.LogLevel`` and ``gen.MessagePriority`` as an
int).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ergo_py.gen.identifiers import PID, Atom, Ref
from ergo_py.net.ergo import edf

_GEN = "#ergo.services/ergo/gen/"
_PROTO = "#ergo.services/ergo/net/proto/"
NO_PID = PID(Atom(""), 0, 0)  # Go's zero gen.PID
NO_ATOM = Atom("")


@dataclass(frozen=True)
class Compression:
    enable: bool = False
    type: str = ""
    level: int = 0
    threshold: int = 0


@dataclass(frozen=True)
class Fallback:
    enable: bool = False
    name: Atom = NO_ATOM
    tag: str = ""


@dataclass(frozen=True)
class ProcessOptions:
    """``gen.ProcessOptions``: what we use is ``env`` and ``link_parent``; the rest is carried."""

    mailbox_size: int = 0
    leader: PID = NO_PID
    env: dict[str, Any] = field(default_factory=dict)
    compression: Compression = Compression()
    send_priority: int = 0
    important_delivery: bool = False
    fallback: Fallback = Fallback()
    link_parent: bool = False
    link_child: bool = False
    log_level: int = 0


@dataclass(frozen=True)
class ProcessOptionsExtra:
    """``gen.ProcessOptionsExtra``: the options, the parent, the name to register, the args."""

    options: ProcessOptions
    parent_pid: PID
    parent_leader: PID
    parent_env: dict[str, Any]
    parent_log_level: int
    register: Atom
    application: Atom
    args: list[Any]


@dataclass(frozen=True)
class SpawnRequest:
    """``MessageSpawn``: start the factory enabled as ``name`` on the receiving node."""

    name: Atom
    options: ProcessOptionsExtra
    ref: Ref


_ENV = ("map", "string", "any")
_STRUCTS: tuple[tuple[str, type, tuple[tuple[str, Any], ...]], ...] = (
    (
        _GEN + "Compression",
        Compression,
        (("enable", "bool"), ("type", "string"), ("level", "int"), ("threshold", "int")),
    ),
    (_GEN + "ProcessFallback", Fallback, (("enable", "bool"), ("name", "atom"), ("tag", "string"))),
    (
        _GEN + "ProcessOptions",
        ProcessOptions,
        (
            ("mailbox_size", "int64"),
            ("leader", "pid"),
            ("env", _ENV),
            ("compression", ("reg", _GEN + "Compression")),
            ("send_priority", "int"),
            ("important_delivery", "bool"),
            ("fallback", ("reg", _GEN + "ProcessFallback")),
            ("link_parent", "bool"),
            ("link_child", "bool"),
            ("log_level", "int"),
        ),
    ),
    (
        _GEN + "ProcessOptionsExtra",
        ProcessOptionsExtra,
        (
            ("options", ("reg", _GEN + "ProcessOptions")),
            ("parent_pid", "pid"),
            ("parent_leader", "pid"),
            ("parent_env", _ENV),
            ("parent_log_level", "int"),
            ("register", "atom"),
            ("application", "atom"),
            ("args", ("slice", "any")),
        ),
    ),
    (
        _PROTO + "MessageSpawn",
        SpawnRequest,
        (("name", "atom"), ("options", ("reg", _GEN + "ProcessOptionsExtra")), ("ref", "ref")),
    ),
)

for _name, _cls, _fields in _STRUCTS:
    edf.register_protocol(edf.StructType(_name, _cls, _fields), _cls)


def spawn_request(
    name: str,
    parent: PID,
    ref: Ref,
    args: tuple[Any, ...] = (),
    *,
    register: str = "",
    env: dict[str, Any] | None = None,
    link_parent: bool = False,
) -> SpawnRequest:
    """A spawn request as Go's ``RemoteSpawn`` makes it (the parent is its own leader)."""
    options = ProcessOptions(env=dict(env or {}), link_parent=link_parent)
    extra = ProcessOptionsExtra(
        options, parent, parent, {}, 0, Atom(register), Atom(""), list(args)
    )
    return SpawnRequest(Atom(name), extra, ref)
