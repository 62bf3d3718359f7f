"""The term codec: Python values <-> msgpack bytes.

Local sends use it too, so a message that works between two local processes
also crosses the wire, and the receiver never shares a mutable object with the
sender (Erlang copies messages; so do we).

Natively: None, bool, int (64-bit), float, str, bytes, list, dict. As msgpack
extension types: tuple, Atom, PID, ProcessID, Ref, Alias, exceptions (as exit
reasons) and dataclasses registered with ``gen.register_type``. Anything else
raises ``gen.ErrUnsupportedType`` at the sender. Bytes that do not decode raise
``gen.RemoteProtocolError``.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import msgpack

from ergo_py.gen import errors as _errors
from ergo_py.gen.errors import ErgoError, ErrUnsupportedType, RemoteProtocolError
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


_local = threading.local()


def _packer() -> msgpack.Packer:
    p: msgpack.Packer | None = getattr(_local, "packer", None)
    if p is None:
        p = msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)
        _local.packer = p
    return p


# Spare packers for nested values (an extension type's payload): the calling
# thread's own packer is busy with the outer value. Each one is taken off the
# list for one pack (list.pop/append are atomic), so threads never share one;
# one that failed mid-pack is dropped rather than reused with a dirty buffer.
_NESTED_SPARE_MAX = 64
_nested_spare: list[msgpack.Packer] = []


def _pack_nested(obj: Any) -> bytes:
    try:
        p = _nested_spare.pop()
    except IndexError:
        p = msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)
    data: bytes = p.pack(obj)
    if len(_nested_spare) < _NESTED_SPARE_MAX:
        _nested_spare.append(p)
    return data


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
        ext = msgpack.ExtType(EXT_PID, _pack_nested([str(obj.node), obj.id, obj.creation]))
    elif t is ProcessID:
        ext = msgpack.ExtType(EXT_PROCESS_ID, _pack_nested([str(obj.name), str(obj.node)]))
    else:
        code = EXT_REF if t is Ref else EXT_ALIAS
        rid = obj.id.to_bytes(_REF_ID_BYTES, "big")
        ext = msgpack.ExtType(code, _pack_nested([str(obj.node), rid, obj.creation]))
    if len(_ident_cache) >= _IDENT_CACHE_MAX:
        _ident_cache.clear()
    _ident_cache[obj] = ext
    return ext


# ExtType's own __new__ re-checks the code and payload types in Python; ours are
# right by construction, so build the named tuple directly on the hot path.
_ext = tuple.__new__


def _default(obj: Any) -> Any:
    t = type(obj)
    if t is tuple:
        return _ext(msgpack.ExtType, (EXT_TUPLE, _pack_nested(list(obj))))
    if t is PID or t is ProcessID or t is Atom or t is Ref or t is Alias:
        return _identifier(obj, t)
    if isinstance(obj, BaseException):
        return msgpack.ExtType(EXT_ERROR, _pack_nested(encode_error(obj)))
    reg = registered_name(t)
    if reg is not None:
        name, fields = reg
        values = [getattr(obj, f) for f in fields]
        return msgpack.ExtType(EXT_REGISTERED, _pack_nested([name, values]))
    if t is not bool and isinstance(obj, int):
        return int(obj)  # IntEnum and friends travel as their value
    if isinstance(obj, str):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        raise ErrUnsupportedType(
            f"{t.__qualname__} is a dataclass that is not registered: call gen.register_type"
        )
    raise ErrUnsupportedType(f"cannot send a value of type {t.__qualname__}")


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


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        if code == EXT_TUPLE:  # by far the most common: checked first, unpacked directly
            return tuple(_unpackb(data, ext_hook=_ext_hook, strict_map_key=False))
        if code == EXT_ATOM:
            return Atom(data.decode())
        inner = _unpackb(data, ext_hook=_ext_hook, strict_map_key=False)
        if code == EXT_PID:
            node, pid_id, creation = inner
            return PID(node, pid_id, creation)
        if code == EXT_PROCESS_ID:
            name, node = inner
            return ProcessID(name, node)
        if code in (EXT_REF, EXT_ALIAS):
            node, rid, creation = inner
            cls = Ref if code == EXT_REF else Alias
            return cls(node, int.from_bytes(rid, "big"), creation)
        if code == EXT_ERROR:
            name, message = inner
            return decode_error(str(name), str(message))
        if code == EXT_REGISTERED:
            name, values = inner
            return make_registered(name, tuple(values))
    except RemoteProtocolError:
        raise
    except Exception as exc:
        raise RemoteProtocolError(f"malformed extension type {code}: {exc}") from exc
    raise RemoteProtocolError(f"unknown extension type {code}")


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
    """Pack one term; raises ``ErrUnsupportedType`` for values that cannot cross."""
    try:
        if type(obj) is tuple:
            # A message is most often a tuple: the thread's packer is free for
            # its payload, so skip the default= hook and a spare packer.
            payload: bytes = _packer().pack(list(obj))
            return _ext_header(EXT_TUPLE, len(payload)) + payload
        return _packer().pack(obj)  # type: ignore[no-any-return]
    except ErgoError:
        _local.packer = None  # a failed pack may leave the buffer dirty
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        _local.packer = None
        raise ErrUnsupportedType(str(exc)) from exc


def decode(data: bytes | bytearray) -> Any:
    """Unpack exactly one term; anything malformed raises ``RemoteProtocolError``."""
    try:
        return _unpackb(data, ext_hook=_ext_hook, strict_map_key=False)
    except RemoteProtocolError:
        raise
    except Exception as exc:
        raise RemoteProtocolError(f"malformed term: {exc}") from exc


def copy(obj: Any) -> Any:
    """What a receiver gets: ``decode(encode(obj))``."""
    return decode(encode(obj))
