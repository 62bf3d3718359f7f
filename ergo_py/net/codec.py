"""The term codec: Python values <-> msgpack bytes.

Local sends use it too, so a message that works between two local processes
also crosses the wire, and the receiver never shares a mutable object with the
sender (Erlang copies messages; so do we).

Natively: None, bool, int (64-bit), float, str, bytes, list, dict. As msgpack
extension types: tuple, Atom, PID, ProcessID, Ref, Alias, exceptions (as exit
reasons) and dataclasses registered with ``gen.register_type``. Anything else
raises ``gen.ErrUnsupportedType`` at the sender. Bytes that do not decode raise
``gen.RemoteProtocolError``.

**Depth.** Tuples and registered dataclasses may nest at most
:func:`max_depth` levels (:data:`DEFAULT_MAX_DEPTH`, 64, unless
:func:`set_max_depth` changed it for the process); lists and dicts between
them do not count, and atoms, identifiers and exceptions are leaves. Each
level is a nested pack and unpack in C: unbounded, a few hundred levels
overflow the thread's C stack and kill the process. A deeper term raises
``gen.ErrTooDeep`` (an ``ErrUnsupportedType``) at the sender and
``gen.RemoteProtocolError`` at a receiver; so do lists and dicts nested past
what msgpack itself accepts (1024 levels), and, so that the two kinds cannot
multiply, more than 1024 levels of lists and dicts in all below the fourth
tuple level. A send or call frame carries a message that is a tuple as an
array of its items (see ``frames``): a message to another node may so nest one
tuple level deeper than a local one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from ergo_py.gen import errors as _errors
from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrTooDeep,
    ErrUnsupportedType,
    RemoteProtocolError,
)
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.gen.types import make_registered, registered_name

EXT_TUPLE = 1
EXT_ATOM = 2
EXT_PID = 3
EXT_PROCESS_ID = 4
EXT_REF = 5
EXT_ALIAS = 6
EXT_REGISTERED = 7
EXT_ERROR = 8

_REF_ID_BYTES = 16


class RemoteException(ErgoError):
    """An exception from another process that has no ergo_py class here.

    ``type_name`` is the original class's qualified name; ``str()`` is its text.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message

    def __repr__(self) -> str:
        return f"RemoteException({self.type_name!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteException) and (other.type_name, other.message) == (
            self.type_name,
            self.message,
        )

    def __hash__(self) -> int:
        return hash((self.type_name, self.message))


# --- depth --------------------------------------------------------------------
#
# A value inside an extension value is packed into bytes first (the payload),
# so every tuple or registered dataclass level is one more pack() (and, when
# decoding, one more unpackb(), whose C frame holds a stack of ~40 KB). The
# codec counts the levels without a counter: the hooks (a packer's default=,
# unpackb's ext_hook=) for values inside d levels are closures built for d,
# and hand a payload to the hooks for d + 1. Nothing is shared between
# threads but the limit, one int.

DEFAULT_MAX_DEPTH = 64
MAX_DEPTH_CAP = 100  # 100 levels of unpackb take ~4 MB of an 8 MB thread stack
_max_depth = DEFAULT_MAX_DEPTH

# msgpack's own limit on lists and dicts inside one pack() or unpackb(). Packing
# them is recursive in C (~500 bytes of stack a level), so from the tuple level
# _CHECK_LISTS_AT down (rare in real messages) the encoder walks a value before
# packing it: below it, lists and dicts may nest _LISTS_MAX levels in all, not
# _LISTS_MAX in every tuple level. Above it, at most 4 x 1024 levels (~2 MB).
_LISTS_MAX = 1024
_CHECK_LISTS_AT = 4


def max_depth() -> int:
    """How deep tuples and registered dataclasses may nest (process-wide)."""
    return _max_depth


def set_max_depth(depth: int) -> int:
    """Change :func:`max_depth` for the whole process; returns the previous limit.

    ``depth`` is 1 to :data:`MAX_DEPTH_CAP`; anything else raises
    ``gen.ErrIncorrect``. Both ends of a link should agree: a receiver with a
    lower limit than the sender refuses the deeper terms as a protocol error
    (and closes the link). Thread-safe; meant to be called once, at start-up.
    """
    global _max_depth
    if type(depth) is not int or not 1 <= depth <= MAX_DEPTH_CAP:
        raise ErrIncorrect(f"max depth must be an int from 1 to {MAX_DEPTH_CAP}, got {depth!r}")
    previous, _max_depth = _max_depth, depth
    return previous


def _too_deep() -> ErrTooDeep:
    return ErrTooDeep(
        f"term nested more than {_max_depth} levels deep (tuples and registered dataclasses)"
    )


def _lists_too_deep() -> ErrTooDeep:
    return ErrTooDeep(f"term nested too deep: lists and dicts more than {_LISTS_MAX} levels")


_LEAVES = frozenset((type(None), bool, int, float, str, bytes, Atom, PID, ProcessID, Ref, Alias))


def _check_lists(top: Any) -> None:
    """Refuse ``top`` (a tuple or registered dataclass) if lists and dicts nest
    more than ``_LISTS_MAX`` levels in all inside it, or extension values more
    than the levels left. Iterative; it stops on cycles, as each step counts."""
    room = _max_depth - _CHECK_LISTS_AT
    stack: list[tuple[Any, int, int]] = [(top, 0, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        value, lists, exts = pop()
        t = type(value)
        items: Any
        if t is list:
            lists += 1
            items = value
        elif t is dict:
            lists += 1
            items = [*value.keys(), *value.values()]
        elif t is tuple:
            exts += 1
            items = value
        else:
            reg = registered_name(t)
            if reg is None:
                continue  # a leaf, or a value the packer refuses
            exts += 1
            items = [getattr(value, f) for f in reg[1]]
        if lists > _LISTS_MAX:
            raise _lists_too_deep()
        if exts > room + 1:
            raise _too_deep()
        for item in items:
            if type(item) not in _LEAVES:
                push((item, lists, exts))


_local = threading.local()


def _packer() -> msgpack.Packer:
    """The calling thread's packer for a whole term (inside no extension value)."""
    p: msgpack.Packer | None = getattr(_local, "packer", None)
    if p is None:
        p = _new_packer(0)
        _local.packer = p
    return p


def _new_packer(depth: int) -> msgpack.Packer:
    return msgpack.Packer(default=_defaults[depth], strict_types=True, use_bin_type=True)


# Spare packers for payloads (an extension value's bytes; the items of a term
# that is a tuple), one list per depth: the calling thread's own packer may be
# busy with the outer value. Each one is taken off its list for one pack
# (list.pop/append are atomic), so threads never share one; one that failed
# mid-pack is dropped rather than reused with a dirty buffer.
_NESTED_SPARE_MAX = 32
_spares: list[list[msgpack.Packer]] = [[] for _ in range(MAX_DEPTH_CAP + 2)]


def _pack_at(depth: int, obj: Any) -> bytes:
    """``obj`` packed as a payload inside ``depth`` extension levels."""
    spares = _spares[depth]
    try:
        p = spares.pop()
    except IndexError:
        p = _new_packer(depth)
    data: bytes = p.pack(obj)
    if len(spares) < _NESTED_SPARE_MAX:
        spares.append(p)
    return data


# Identifiers' and exceptions' payloads hold only strings, ints and bytes: they
# are packed as if at the deepest level, where no tuple is allowed (and
# unpacked with no extension type allowed, see _no_ext).
_LEAF = MAX_DEPTH_CAP

# Identifiers are immutable and the same few recur in every frame (sender,
# recipient): keep their encoded form. Bounded; cleared wholesale when full.
_IDENT_CACHE_MAX = 4096
_ident_cache: dict[Any, msgpack.ExtType] = {}


def _identifier(obj: Any, t: type) -> msgpack.ExtType:
    ext = _ident_cache.get(obj)
    if ext is not None:
        return ext
    if t is Atom:
        ext = msgpack.ExtType(EXT_ATOM, str(obj).encode())
    elif t is PID:
        ext = msgpack.ExtType(EXT_PID, _pack_at(_LEAF, [str(obj.node), obj.id, obj.creation]))
    elif t is ProcessID:
        ext = msgpack.ExtType(EXT_PROCESS_ID, _pack_at(_LEAF, [str(obj.name), str(obj.node)]))
    else:
        code = EXT_REF if t is Ref else EXT_ALIAS
        rid = obj.id.to_bytes(_REF_ID_BYTES, "big")
        ext = msgpack.ExtType(code, _pack_at(_LEAF, [str(obj.node), rid, obj.creation]))
    if len(_ident_cache) >= _IDENT_CACHE_MAX:
        _ident_cache.clear()
    _ident_cache[obj] = ext
    return ext


# ExtType's own __new__ re-checks the code and payload types in Python; ours are
# right by construction, so build the named tuple directly on the hot path.
_ext = tuple.__new__
_ExtType = msgpack.ExtType


def _make_default(depth: int, inner_default: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The ``default=`` hook of packers for values inside ``depth`` extension levels.

    ``inner_default`` is the hook for ``depth + 1``: the packers of the
    payloads it makes use it.
    """
    inner = depth + 1
    walk = inner == _CHECK_LISTS_AT
    spares = _spares[inner]
    take, give_back = spares.pop, spares.append

    def default(obj: Any) -> Any:
        t = type(obj)
        if t is tuple:  # as _pack_at, inline: the most common extension type by far
            if inner > _max_depth:
                raise _too_deep()
            if walk:
                _check_lists(obj)
            try:
                p = take()
            except IndexError:
                p = msgpack.Packer(default=inner_default, strict_types=True, use_bin_type=True)
            data = p.pack(list(obj))
            if len(spares) < _NESTED_SPARE_MAX:
                give_back(p)
            return _ext(_ExtType, (EXT_TUPLE, data))
        if t is PID or t is ProcessID or t is Atom or t is Ref or t is Alias:
            return _identifier(obj, t)
        if isinstance(obj, BaseException):
            return msgpack.ExtType(EXT_ERROR, _pack_at(_LEAF, encode_error(obj)))
        reg = registered_name(t)
        if reg is not None:
            if inner > _max_depth:
                raise _too_deep()
            if walk:
                _check_lists(obj)
            name, fields = reg
            values = [getattr(obj, f) for f in fields]
            return msgpack.ExtType(EXT_REGISTERED, _pack_at(inner, [name, values]))
        if t is not bool and isinstance(obj, int):
            return int(obj)  # IntEnum and friends travel as their value
        if isinstance(obj, str):
            return str(obj)
        if dataclasses.is_dataclass(obj):
            raise ErrUnsupportedType(
                f"{t.__qualname__} is a dataclass that is not registered: call gen.register_type"
            )
        raise ErrUnsupportedType(f"cannot send a value of type {t.__qualname__}")

    return default


def _chain(make: Callable[[int, Any], Any], last: Any) -> list[Any]:
    """``make(d, hook for d + 1)`` for every depth d from 0 to the cap, deepest first
    built; ``last`` stands for the depth past the cap (never reached)."""
    hooks = [last]
    for d in reversed(range(MAX_DEPTH_CAP + 1)):
        hooks.append(make(d, hooks[-1]))
    hooks.reverse()
    return hooks[:-1]


def _past_the_cap(obj: Any) -> Any:
    raise _too_deep()


_defaults: list[Callable[[Any], Any]] = _chain(_make_default, _past_the_cap)


def encode_error(exc: BaseException) -> list[str]:
    """An exception as [class name, text]: ergo_py errors keep their class."""
    if isinstance(exc, RemoteException):
        return [exc.type_name, exc.message]
    t = type(exc)
    name = t.__name__ if getattr(_errors, t.__name__, None) is t else t.__qualname__
    if t.__module__ not in ("builtins", _errors.__name__):
        name = f"{t.__module__}.{t.__qualname__}"
    return [name, str(exc)]


def decode_error(name: str, message: str) -> BaseException:
    """The inverse of :func:`encode_error`."""
    cls = getattr(_errors, name, None)
    if (
        isinstance(cls, type)
        and issubclass(cls, ErgoError)
        and cls is not _errors.HandshakeRejected
    ):
        return cls(message)
    return RemoteException(name, message)


_unpackb = msgpack.unpackb  # raw=False and use_list=True are its defaults


def _remote_too_deep() -> RemoteProtocolError:
    return RemoteProtocolError(
        f"term nested more than {_max_depth} levels deep (tuples and registered dataclasses)"
    )


def _remote_lists_too_deep() -> RemoteProtocolError:
    return RemoteProtocolError(
        f"term nested too deep: lists and dicts more than {_LISTS_MAX} levels"
    )


def _raise_malformed(exc: Exception, what: str) -> NoReturn:
    """Raise what a failure to unpack a peer's ``what`` is: a ``RemoteProtocolError``.

    Called in an ``except Exception`` block: one already typed is raised
    again as it is, msgpack's depth limit says so, anything else is ``what``
    malformed.
    """
    if isinstance(exc, RemoteProtocolError):
        raise exc
    if isinstance(exc, msgpack.StackError):
        raise _remote_lists_too_deep() from None
    raise RemoteProtocolError(f"malformed {what}: {exc}") from exc


def _no_ext(code: int, data: bytes) -> Any:
    """The ``ext_hook`` for identifiers' and exceptions' payloads: plain fields only."""
    raise RemoteProtocolError(f"extension type {code} inside an identifier or an error")


def _make_hook(depth: int, inner_hook: Callable[[int, bytes], Any]) -> Callable[[int, bytes], Any]:
    """The ``ext_hook`` for values inside ``depth`` extension levels; ``inner_hook``
    is the one for ``depth + 1``, for the payloads of tuples and dataclasses."""
    inner = depth + 1

    def hook(code: int, data: bytes) -> Any:
        try:
            if code == EXT_TUPLE:  # by far the most common: checked first, unpacked directly
                if inner > _max_depth:
                    raise _remote_too_deep()
                return tuple(_unpackb(data, ext_hook=inner_hook, strict_map_key=False))
            if code == EXT_ATOM:
                return Atom(data.decode())
            if code == EXT_REGISTERED:
                if inner > _max_depth:
                    raise _remote_too_deep()
                name, values = _unpackb(data, ext_hook=inner_hook, strict_map_key=False)
                return make_registered(name, tuple(values))
            inner_value = _unpackb(data, ext_hook=_no_ext, strict_map_key=False)
            if code == EXT_PID:
                node, pid_id, creation = inner_value
                return PID(node, pid_id, creation)
            if code == EXT_PROCESS_ID:
                name, node = inner_value
                return ProcessID(name, node)
            if code in (EXT_REF, EXT_ALIAS):
                node, rid, creation = inner_value
                cls = Ref if code == EXT_REF else Alias
                return cls(node, int.from_bytes(rid, "big"), creation)
            if code == EXT_ERROR:
                name, message = inner_value
                return decode_error(str(name), str(message))
        except Exception as exc:
            _raise_malformed(exc, f"extension type {code}")
        raise RemoteProtocolError(f"unknown extension type {code}")

    return hook


def _past_the_cap_remote(code: int, data: bytes) -> Any:
    raise _remote_too_deep()


_hook: Callable[[int, bytes], Any] = _chain(_make_hook, _past_the_cap_remote)[0]


def _ext_header(code: int, size: int) -> bytes:
    """The msgpack header of an extension value of ``size`` bytes (as msgpack writes it)."""
    fixed = _FIXEXT.get(size)
    if fixed is not None:
        return bytes((fixed, code))
    if size <= 0xFF:
        return bytes((0xC7, size, code))
    if size <= 0xFFFF:
        return b"\xc8" + size.to_bytes(2, "big") + bytes((code,))
    if size <= 0xFFFFFFFF:
        return b"\xc9" + size.to_bytes(4, "big") + bytes((code,))
    raise ValueError(f"extension payload of {size} bytes is too large")


_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def encode(obj: Any) -> bytes:
    """Pack one term; raises ``ErrUnsupportedType`` for values that cannot cross,
    ``ErrTooDeep`` (a subclass) for terms nested too deep (see the module doc)."""
    try:
        if type(obj) is tuple:
            # A message is most often a tuple: pack its items as the payload
            # directly (as _pack_at, inline), skipping the default= hook.
            spares = _spares[1]
            try:
                p = spares.pop()
            except IndexError:
                p = _new_packer(1)
            payload: bytes = p.pack(list(obj))
            if len(spares) < _NESTED_SPARE_MAX:
                spares.append(p)
            return _ext_header(EXT_TUPLE, len(payload)) + payload
        return _packer().pack(obj)  # type: ignore[no-any-return]
    except ErgoError:
        _drop_packers()  # a failed pack may leave the buffer dirty
        raise
    except RecursionError as exc:  # the caller's own Python stack was nearly used up
        _drop_packers()
        raise ErrTooDeep(f"term nested too deep for the Python stack: {exc}") from None
    except ValueError as exc:
        _drop_packers()
        if "recursion limit" in str(exc):  # msgpack's own limit on lists and dicts
            raise _lists_too_deep() from None
        raise ErrUnsupportedType(str(exc)) from exc
    except (TypeError, OverflowError) as exc:
        _drop_packers()
        raise ErrUnsupportedType(str(exc)) from exc


def _drop_packers() -> None:
    _local.packer = None


def encode_item(obj: Any) -> bytes:
    """A message as send and call frames carry it: ``is_tuple``, then the term.

    A tuple travels as ``true`` and the array of its items (no extension
    type), anything else as ``false`` and :func:`encode`'s bytes. Errors as
    for :func:`encode`. The per-message path of every remote send, call and
    reply: the thread's packer is used here directly.
    """
    p: msgpack.Packer | None = getattr(_local, "packer", None)
    if p is not None:
        try:
            if type(obj) is tuple:
                return b"\xc3" + p.pack(list(obj))  # type: ignore[no-any-return]
            return b"\xc2" + p.pack(obj)  # type: ignore[no-any-return]
        except Exception:
            _drop_packers()  # below, a fresh packer raises the typed error
    if type(obj) is tuple:
        return b"\xc3" + encode(list(obj))
    return b"\xc2" + encode(obj)


def decode(data: bytes | bytearray) -> Any:
    """Unpack exactly one term; anything malformed, or nested too deep, raises
    ``RemoteProtocolError``."""
    try:
        return _unpackb(data, ext_hook=_hook, strict_map_key=False)
    except Exception as exc:
        _raise_malformed(exc, "term")


def copy(obj: Any) -> Any:
    """What a receiver gets: ``decode(encode(obj))``."""
    return decode(encode(obj))
