"""EDF, Ergo's data format: what a Go Ergo node puts in its messages (sans-IO).

A value with its type ("any", as in a message) is a type tag followed by the
body; inside a struct, fields carry no tags: their types come from the
struct's declaration. Python has no declared field types of that kind, so a
struct crossing to Go is described by a *spec* per field (see
:func:`spec_of`), taken from the dataclass annotations of a class registered
with ``gen.register_type(cls, name="#go/pkg/Type")``.

What maps to what (Python <-> Go): ``None`` <-> nil, ``bool``, ``int`` <->
``int`` (int8..uint64 decode to ``int``), ``float`` <-> ``float64``
(float32 decodes to ``float``), ``str`` <-> ``string``, ``gen.Atom``,
``bytes`` <-> ``[]byte``, ``list``/``tuple`` <-> ``[]any``, ``dict`` <->
``map[any]any``, ``gen.PID``/``ProcessID``/``Alias``/``Ref``, exceptions
<-> ``error`` (Ergo's standard errors map to ``gen``'s exception classes and
the terminate reasons to atoms), ``datetime`` <-> ``time.Time``.

The peer's caches (atoms, registered type names and errors by number, from
its handshake) decode what it sends; we never send cached ids, except the
standard errors we announce ourselves (:data:`ERROR_IDS`).

Over 600 lines on purpose: encoding and decoding are mirror images of one
format, and reviewing one against the other is easiest side by side.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ergo_py.gen import errors as ge
from ergo_py.gen.errors import ErgoError, ErrUnsupportedType, RemoteProtocolError
from ergo_py.gen.identifiers import PID, Alias, Atom, ProcessID, Ref
from ergo_py.gen.types import registered_name, registered_type

# Type tags (Ergo's net/edf/edf.go).
T_TYPE, T_REG, T_ANY = 0x82, 0x83, 0x84
T_ATOM, T_STRING, T_BINARY, T_FLOAT32, T_FLOAT64, T_BOOL = 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x91
T_INT8, T_INT16, T_INT32, T_INT64, T_INT = 0x92, 0x93, 0x94, 0x95, 0x96
T_UINT8, T_UINT16, T_UINT32, T_UINT64, T_UINT = 0x97, 0x98, 0x99, 0x9A, 0x9B
T_ERROR, T_SLICE, T_ARRAY, T_MAP = 0x9C, 0x9D, 0x9E, 0x9F
T_PID, T_PROCESSID, T_ALIAS, T_EVENT, T_REF, T_TIME = 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF
T_NIL = 0xFF

MAX_DEPTH = 64  # nesting a peer may send before we call it malformed

# A spec: a scalar name, ("slice", spec), ("map", key, value), ("array", n, spec)
# or ("reg", go_type_name).
Spec = Any

_SCALAR_TAG = {
    "atom": T_ATOM, "string": T_STRING, "binary": T_BINARY, "float32": T_FLOAT32,
    "float64": T_FLOAT64, "bool": T_BOOL, "int8": T_INT8, "int16": T_INT16, "int32": T_INT32,
    "int64": T_INT64, "int": T_INT, "uint8": T_UINT8, "uint16": T_UINT16, "uint32": T_UINT32,
    "uint64": T_UINT64, "uint": T_UINT, "error": T_ERROR, "any": T_ANY, "pid": T_PID,
    "processid": T_PROCESSID, "alias": T_ALIAS, "event": T_EVENT, "ref": T_REF, "time": T_TIME,
}  # fmt: skip
_TAG_SCALAR = {tag: name for name, tag in _SCALAR_TAG.items()}
_INTS = {
    "int8": ">b", "int16": ">h", "int32": ">i", "int64": ">q", "int": ">q",
    "uint8": ">B", "uint16": ">H", "uint32": ">I", "uint64": ">Q", "uint": ">Q",
}  # fmt: skip
_U16, _U32, _U64, _I64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q"), ">q"
_ID3 = struct.Struct(">qQQQ")  # creation, then the three id words of a Ref / Alias
_M64 = (1 << 64) - 1

# Ergo's standard errors by their text; the terminate reasons are atoms here.
ERROR_CLASSES: dict[str, type[ErgoError]] = {
    "incorrect value or argument": ge.ErrIncorrect, "timed out": ge.ErrTimeout,
    "not supported": ge.ErrUnsupported, "unknown name": ge.ErrNameUnknown,
    "not allowed": ge.ErrNotAllowed, "unknown process": ge.ErrProcessUnknown,
    "process terminated": ge.ErrProcessTerminated, "resource is taken": ge.ErrTaken,
    "process ID belongs to the previous incarnation": ge.ErrProcessIncarnation,
    "too large": ge.ErrTooLarge, "no connection": ge.ErrNoConnection, "no route": ge.ErrNoRoute,
}  # fmt: skip
_CLASS_TEXT = {cls: text for text, cls in ERROR_CLASSES.items()}
REASONS = ("normal", "shutdown", "kill", "panic")
# The errors we send by number (announced in our handshake): the peer maps each
# to its own error of the same text, so a Go node sees its gen.ErrProcessUnknown
# or gen.TerminateReasonNormal itself, not a look-alike.
ERROR_IDS = {text: 0x8000 + i for i, text in enumerate((*REASONS, *ERROR_CLASSES))}


class RemoteError(ErgoError):
    """An ``error`` value from a Go node that is none of Ergo's standard ones."""


def error_text(value: Any) -> str:
    """The Go text of an error value (our exception, a reason atom or a string)."""
    if isinstance(value, BaseException):
        for cls in type(value).__mro__:
            text = _CLASS_TEXT.get(cls)
            if text is not None:
                return text
        return str(value) or type(value).__name__
    return str(value)


def error_value(text: str) -> Any:
    """What a Go error with ``text`` is here: a reason atom, a gen exception, or RemoteError."""
    if text in REASONS:
        return Atom(text)
    cls = ERROR_CLASSES.get(text)
    return cls(text) if cls is not None else RemoteError(text)


def ref_words(ident: int) -> tuple[int, int, int]:
    """A Ref's id as Ergo's three 64-bit words (ours are 96 bits; Go's up to 192)."""
    return (ident >> 128) & _M64, (ident >> 64) & _M64, ident & _M64


def words_ref(w0: int, w1: int, w2: int) -> int:
    return (w0 << 128) | (w1 << 64) | w2


# --- registered structs -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StructType:
    """A Go struct (or a type with its own MarshalEDF): how to build it and its fields."""

    name: str
    make: Callable[..., Any]
    fields: tuple[tuple[str, Spec], ...]  # empty for a raw (marshaled) type
    raw: Callable[[Any], bytes] | None = None  # MarshalEDF
    unraw: Callable[[bytes], Any] | None = None  # UnmarshalEDF


_protocol: dict[str, StructType] = {}
_protocol_by_class: dict[type, Callable[[Any], StructType]] = {}
_derived: dict[type, StructType] = {}


def register_protocol(st: StructType, cls: type | None = None) -> None:
    """Ergo's own protocol structs (handshake, link requests): known under their Go names."""
    _protocol[st.name] = st
    if cls is not None:
        _protocol_by_class[cls] = lambda _value: st


def register_protocol_class(cls: type, pick: Callable[[Any], StructType]) -> None:
    """One class standing for several Go structs: ``pick`` says which, per value."""
    _protocol_by_class[cls] = pick


def spec_of(annotation: Any) -> Spec:
    """The EDF spec of a dataclass field annotation (``ErrUnsupportedType`` if none)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for mark in extra:
            if isinstance(mark, str) and mark in _SCALAR_TAG:
                return mark
        return spec_of(base)
    simple = {
        bool: "bool", int: "int", float: "float64", str: "string", bytes: "binary",
        Atom: "atom", PID: "pid", ProcessID: "processid", Alias: "alias", Ref: "ref",
        dt.datetime: "time", typing.Any: "any", object: "any",
    }  # fmt: skip
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseException):
        return "error"
    if origin in (list, Sequence, tuple) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        return ("slice", spec_of(args[0]) if args else "any")
    if origin in (dict, Mapping) or annotation is dict:
        args = typing.get_args(annotation)
        return ("map", *(spec_of(a) for a in args)) if args else ("map", "any", "any")
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        return "any"
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        reg = registered_name(annotation)
        if reg is not None:
            return ("reg", reg[0])
    raise ErrUnsupportedType(f"no EDF type for a field annotated {annotation!r}")


def _derive(cls: type) -> StructType:
    st = _derived.get(cls)
    if st is None:
        reg = registered_name(cls)
        if reg is None:
            raise ErrUnsupportedType(f"{cls.__qualname__} is not registered (gen.register_type)")
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = tuple((f.name, spec_of(hints[f.name])) for f in dataclasses.fields(cls))
        st = _derived[cls] = StructType(reg[0], cls, fields)
    return st


def struct_type(name: str) -> StructType:
    st = _protocol.get(name)
    if st is not None:
        return st
    cls = registered_type(name)
    if cls is None:
        raise RemoteProtocolError(
            f"the peer sent a {name!r}: register a dataclass under that name "
            "with gen.register_type(cls, name=...) to receive it"
        )
    return _derive(cls)


def _type_of_value(value: Any) -> StructType | None:
    cls = type(value)
    pick = _protocol_by_class.get(cls)
    if pick is not None:
        return pick(value)
    return _derive(cls) if dataclasses.is_dataclass(cls) else None


# --- encoding -------------------------------------------------------------------------


def _atom(out: bytearray, value: str) -> None:
    _text(out, value, 255, "atom")


def _ident(out: bytearray, value: Ref) -> None:
    _atom(out, value.node)
    out += _ID3.pack(value.creation, *ref_words(value.id))


def _error_body(out: bytearray, value: Any) -> None:
    """An ``error``: nil, a number from :data:`ERROR_IDS`, or its text (a plain str stays text)."""
    if value is None:
        out += b"\xff\xff"
        return
    text = value if type(value) is str else error_text(value)
    ident = ERROR_IDS.get(text) if type(value) is not str else None
    if ident is not None:
        out += _U16.pack(ident)
        return
    _text(out, text, 0x7FFF, "error text")


def _text(out: bytearray, text: str, limit: int, what: str) -> None:
    """A string body: its length (16 bits), then its UTF-8."""
    data = text.encode()
    if len(data) > limit:
        raise ge.ErrTooLarge(f"{what} longer than {limit} bytes cannot go to Go: {text[:32]!r}...")
    out += _U16.pack(len(data))
    out += data


def _time_body(out: bytearray, value: dt.datetime) -> None:
    if value.tzinfo is None:
        raise ErrUnsupportedType("a naive datetime has no Go time.Time: give it a tzinfo")
    offset = value.utcoffset() or dt.timedelta()
    utc = value.astimezone(dt.UTC).replace(tzinfo=None)
    seconds = (utc - dt.datetime(1, 1, 1)) // dt.timedelta(seconds=1)
    minutes = -1 if value.tzinfo is dt.UTC else int(offset.total_seconds() // 60)
    body = struct.pack(">BqiH", 1, seconds, utc.microsecond * 1000, minutes & 0xFFFF)
    out.append(len(body))
    out += body


def encode_value(out: bytearray, spec: Spec, value: Any, depth: int = 0) -> None:
    """Append ``value``'s body as ``spec`` (no type tag), as a Go struct field is written."""
    if depth > MAX_DEPTH:
        raise ge.ErrTooDeep(f"nested deeper than {MAX_DEPTH}")
    if type(spec) is str:
        if spec == "any":
            encode_any(out, value, depth + 1)
        elif spec in ("string", "atom"):
            if spec == "atom":
                _atom(out, value)
                return
            _text(out, value, 0xFFFF, "a string")
        elif spec == "binary":
            out += _U32.pack(len(value))
            out += value
        elif spec == "bool":
            out.append(1 if value else 0)
        elif spec in _INTS:
            try:
                out += struct.pack(_INTS[spec], value)
            except struct.error as exc:
                raise ErrUnsupportedType(f"{value!r} does not fit a Go {spec}") from exc
        elif spec == "float64":
            out += struct.pack(">d", value)
        elif spec == "float32":
            out += struct.pack(">f", value)
        elif spec == "error":
            _error_body(out, value)
        elif spec == "pid":
            _atom(out, value.node)
            out += struct.pack(">Qq", value.id, value.creation)
        elif spec == "processid":
            _atom(out, value.node)
            _atom(out, value.name)
        elif spec in ("alias", "ref"):
            _ident(out, value)
        elif spec == "time":
            _time_body(out, value)
        else:
            raise ErrUnsupportedType(f"cannot encode EDF {spec}")
        return
    kind = spec[0]
    if kind in ("slice", "map"):
        if value is None:  # Go's nil slice or map
            out.append(T_NIL)
            return
        out.append(T_SLICE if kind == "slice" else T_MAP)
        out += _U32.pack(len(value))
        if kind == "slice":
            for item in value:
                encode_value(out, spec[1], item, depth + 1)
        else:
            for k, v in value.items():
                encode_value(out, spec[1], k, depth + 1)
                encode_value(out, spec[2], v, depth + 1)
    elif kind == "array":
        if len(value) != spec[1]:
            raise ErrUnsupportedType(f"a Go array of {spec[1]} needs {spec[1]} items")
        for item in value:
            encode_value(out, spec[2], item, depth + 1)
    else:  # "reg"
        _struct_body(out, struct_type(spec[1]), value, depth)


def _struct_body(out: bytearray, st: StructType, value: Any, depth: int) -> None:
    if st.raw is not None:
        data = st.raw(value)
        out += _U32.pack(len(data))
        out += data
        return
    for name, spec in st.fields:
        encode_value(out, spec, getattr(value, name), depth + 1)


_TYPED_LIST = bytes([T_TYPE, 0, 2, T_SLICE, T_ANY])
_TYPED_MAP = bytes([T_TYPE, 0, 3, T_MAP, T_ANY, T_ANY])


def encode_any(out: bytearray, value: Any, depth: int = 0) -> None:
    """Append ``value`` with its type tag (a message, an ``any`` field, an item of ``[]any``)."""
    if depth > MAX_DEPTH:
        raise ge.ErrTooDeep(f"nested deeper than {MAX_DEPTH}")
    cls = type(value)
    if value is None:
        out.append(T_NIL)
    elif cls is bool:
        out.append(T_BOOL)
        out.append(1 if value else 0)
    elif cls is int:
        if -(1 << 63) <= value < (1 << 63):
            out.append(T_INT)
            out += struct.pack(_I64, value)
        elif 0 <= value <= _M64:
            out.append(T_UINT64)
            out += _U64.pack(value)
        else:
            raise ErrUnsupportedType(f"{value} does not fit 64 bits")
    elif cls is float:
        out.append(T_FLOAT64)
        out += struct.pack(">d", value)
    elif cls is Atom:
        out.append(T_ATOM)
        _atom(out, value)
    elif cls is str:
        out.append(T_STRING)
        encode_value(out, "string", value)
    elif cls in (bytes, bytearray, memoryview):
        out.append(T_BINARY)
        encode_value(out, "binary", bytes(value))
    elif cls is PID:
        out.append(T_PID)
        encode_value(out, "pid", value)
    elif cls is ProcessID:
        out.append(T_PROCESSID)
        encode_value(out, "processid", value)
    elif cls is Alias:
        out.append(T_ALIAS)
        _ident(out, value)
    elif cls is Ref:
        out.append(T_REF)
        _ident(out, value)
    elif cls in (list, tuple):
        out += _TYPED_LIST
        encode_value(out, ("slice", "any"), value, depth)
    elif cls is dict:
        out += _TYPED_MAP
        encode_value(out, ("map", "any", "any"), value, depth)
    elif isinstance(value, BaseException):
        out.append(T_ERROR)
        _error_body(out, value)
    elif isinstance(value, dt.datetime):
        out.append(T_TIME)
        _time_body(out, value)
    else:
        st = _type_of_value(value)
        if st is None:
            raise ErrUnsupportedType(
                f"{cls.__qualname__} has no EDF form: register a dataclass with "
                "gen.register_type(cls, name='#go/package/Type')"
            )
        name = st.name.encode()
        out.append(T_REG)
        out += _U16.pack(len(name))
        out += name
        _struct_body(out, st, value, depth)


def encode(value: Any) -> bytes:
    """``value`` as a whole EDF message (what ``edf.Encode`` writes)."""
    out = bytearray()
    encode_any(out, value)
    return bytes(out)


# --- decoding -------------------------------------------------------------------------


@dataclasses.dataclass
class Caches:
    """What the peer's handshake said its numbers stand for (decoding only)."""

    atoms: dict[int, str] = dataclasses.field(default_factory=dict)
    types: dict[int, str] = dataclasses.field(default_factory=dict)
    errors: dict[int, str] = dataclasses.field(default_factory=dict)


_NO_CACHES = Caches()


class Decoder:
    """Reads EDF from ``data``, from ``pos`` on; ``RemoteProtocolError`` on anything malformed."""

    __slots__ = ("caches", "data", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0, caches: Caches | None = None):
        self.data = bytes(data)
        self.pos = pos
        self.caches = caches or _NO_CACHES

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RemoteProtocolError("EDF: the data ends early")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _byte(self) -> int:
        return self._take(1)[0]

    def _u16(self) -> int:
        return int(_U16.unpack(self._take(2))[0])

    def _u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def _text(self, n: int, cached: bool, cache: Mapping[int, str], what: str) -> str:
        """A length-prefixed text, or (``cached``) the one the peer's handshake numbered ``n``."""
        if not cached:
            return self._take(n).decode()
        text = cache.get(n)
        if text is None:
            raise RemoteProtocolError(f"EDF: unknown {what} cache id {n}")
        return text

    def _atom(self) -> Atom:
        n = self._u16()
        return Atom(self._text(n, n > 255, self.caches.atoms, "atom"))

    def _ident(self, cls: type[Ref]) -> Ref:
        node = self._atom()
        creation, w0, w1, w2 = _ID3.unpack(self._take(32))
        return cls(node, words_ref(w0, w1, w2), creation)

    def _error(self) -> Any:
        n = self._u16()
        if n == 0xFFFF:
            return None
        return error_value(self._text(n, n > 0x7FFF, self.caches.errors, "error"))

    def _reg_name(self) -> str:
        n = self._u16()
        return self._text(n, n > 4095, self.caches.types, "type")

    def _time(self) -> dt.datetime:
        body = self._take(self._byte())
        if len(body) < 15 or body[0] not in (1, 2):
            raise RemoteProtocolError("EDF: malformed time.Time")
        _, seconds, nanos, minutes = struct.unpack(">BqiH", body[:15])
        moment = dt.datetime(1, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            seconds=seconds, microseconds=nanos // 1000
        )
        if minutes == 0xFFFF:
            return moment
        minutes = minutes - 0x10000 if minutes >= 0x8000 else minutes
        return moment.astimezone(dt.timezone(dt.timedelta(minutes=minutes)))

    def value(self, spec: Spec, depth: int = 0) -> Any:
        """A body written as ``spec`` (a struct field's value)."""
        if depth > MAX_DEPTH:
            raise RemoteProtocolError(f"EDF: nested deeper than {MAX_DEPTH}")
        if type(spec) is str:
            if spec == "any":
                return self.any(depth + 1)
            if spec == "string":
                return self._take(self._u16()).decode()
            if spec == "atom":
                return self._atom()
            if spec == "binary":
                return self._take(self._u32())
            if spec == "bool":
                return self._byte() == 1
            fmt = _INTS.get(spec)
            if fmt is not None:
                return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
            if spec == "float64":
                return struct.unpack(">d", self._take(8))[0]
            if spec == "float32":
                return struct.unpack(">f", self._take(4))[0]
            if spec == "error":
                return self._error()
            if spec == "pid":
                node = self._atom()
                ident, creation = struct.unpack(">Qq", self._take(16))
                return PID(node, ident, creation)
            if spec == "processid":
                node = self._atom()
                return ProcessID(self._atom(), node)
            if spec in ("alias", "ref"):
                return self._ident(Alias if spec == "alias" else Ref)
            if spec == "time":
                return self._time()
            if spec == "event":
                node = self._atom()
                return (node, self._atom())
            raise RemoteProtocolError(f"EDF: unknown type {spec}")
        kind = spec[0]
        if kind in ("slice", "map"):
            tag = self._byte()
            if tag == T_NIL:
                return [] if kind == "slice" else {}
            if tag != (T_SLICE if kind == "slice" else T_MAP):
                raise RemoteProtocolError(f"EDF: expected a {kind}, got tag {tag:#x}")
            n = self._u32()
            if n > len(self.data) - self.pos:
                raise RemoteProtocolError(f"EDF: a {kind} of {n} items in fewer bytes")
            if kind == "slice":
                return [self.value(spec[1], depth + 1) for _ in range(n)]
            out: dict[Any, Any] = {}
            for _ in range(n):
                key = self.value(spec[1], depth + 1)
                try:
                    out[key] = self.value(spec[2], depth + 1)
                except TypeError as exc:  # an unhashable key (a list): no dict can hold it
                    raise RemoteProtocolError(f"EDF: map key {key!r} is unhashable") from exc
            return out
        if kind == "array":
            return [self.value(spec[2], depth + 1) for _ in range(spec[1])]
        return self._struct(struct_type(spec[1]), depth)

    def _struct(self, st: StructType, depth: int) -> Any:
        if st.unraw is not None:
            return st.unraw(self._take(self._u32()))
        values = [self.value(spec, depth + 1) for _, spec in st.fields]
        try:
            return st.make(*values)
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"EDF: cannot build {st.name}: {exc}") from exc

    def _fold(self, fold: Decoder, depth: int) -> Spec:
        """A type written out in a T_TYPE prefix."""
        if depth > MAX_DEPTH:
            raise RemoteProtocolError(f"EDF: type nested deeper than {MAX_DEPTH}")
        tag = fold._byte()
        if tag == T_SLICE:
            return ("slice", self._fold(fold, depth + 1))
        if tag == T_MAP:
            return ("map", self._fold(fold, depth + 1), self._fold(fold, depth + 1))
        if tag == T_ARRAY:
            n = fold._u32()
            return ("array", n, self._fold(fold, depth + 1))
        if tag == T_REG:
            return ("reg", fold._reg_name())
        name = _TAG_SCALAR.get(tag)
        if name is None:
            raise RemoteProtocolError(f"EDF: unknown type tag {tag:#x}")
        return name

    def any(self, depth: int = 0) -> Any:
        """A value with its type tag."""
        tag = self._byte()
        if tag == T_NIL:
            return None
        if tag == T_TYPE:
            fold = Decoder(self._take(self._u16()), caches=self.caches)
            spec = self._fold(fold, depth)
            if fold.pos != len(fold.data):
                raise RemoteProtocolError("EDF: trailing bytes in a type")
            return self.value(spec, depth)
        if tag == T_REG:
            return self._struct(struct_type(self._reg_name()), depth)
        name = _TAG_SCALAR.get(tag)
        if name is None or name == "any":
            raise RemoteProtocolError(f"EDF: unknown type tag {tag:#x}")
        return self.value(name, depth)


def decode(data: bytes | memoryview, caches: Caches | None = None) -> tuple[Any, int]:
    """One EDF message from ``data``: the value and how many bytes it took."""
    dec = Decoder(data, caches=caches)
    try:
        value = dec.any()
    except (UnicodeDecodeError, struct.error, OverflowError, ValueError) as exc:
        raise RemoteProtocolError(f"EDF: malformed: {exc}") from exc
    return value, dec.pos
