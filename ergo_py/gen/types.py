"""``register_type``: which dataclasses may cross the wire.

Like Ergo's EDF ``RegisterTypeOf``: both ends register the same class under the
same name (by default ``module.QualName``) before the first message uses it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, TypeVar

from ergo_py.gen.errors import ErrIncorrect, ErrTaken

T = TypeVar("T", bound=type)

_lock = threading.Lock()
_by_name: dict[str, type] = {}
_by_type: dict[type, tuple[str, tuple[str, ...]]] = {}


def register_type(cls: T, name: str | None = None) -> T:
    """Make the dataclass ``cls`` sendable; usable as a decorator.

    Registering the same class twice is harmless; a different class under a
    taken name raises ``ErrTaken``.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ErrIncorrect(f"register_type needs a dataclass, got {cls!r}")
    type_name = name or f"{cls.__module__}.{cls.__qualname__}"
    fields = tuple(f.name for f in dataclasses.fields(cls))
    with _lock:
        known = _by_name.get(type_name)
        if known is not None and known is not cls:
            raise ErrTaken(f"type name {type_name!r} is registered for {known!r}")
        _by_name[type_name] = cls
        _by_type[cls] = (type_name, fields)
    return cls


def registered_name(cls: type) -> tuple[str, tuple[str, ...]] | None:
    """The wire name and field order of a registered class, or None."""
    return _by_type.get(cls)


def registered_type(name: str) -> type | None:
    """The class registered under a wire name, or None."""
    return _by_name.get(name)


def make_registered(name: str, values: tuple[Any, ...]) -> Any:
    """Rebuild an instance of a registered class from its field values."""
    cls = _by_name.get(name)
    if cls is None:
        raise ErrIncorrect(f"unknown type {name!r}: register it with gen.register_type")
    fields = _by_type[cls][1]
    if len(values) != len(fields):
        raise ErrIncorrect(f"type {name!r} has {len(fields)} fields, got {len(values)}")
    return cls(**dict(zip(fields, values, strict=True)))
