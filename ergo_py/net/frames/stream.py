"""The stream decoder: bytes from a link in, typed frames out (sans-IO).

A link's reader feeds it whatever each read returned and drains the whole
frames; the frame header is checked as soon as it is complete, so an
oversized or foreign stream is refused before its body is buffered. The
send frames, most of the traffic, are read here inline (see "the send
frames" in layouts); the rest through ``layouts.decode_frame``.
"""

from __future__ import annotations

from ergo_py.gen.errors import ErrIncorrect, ErrTooLarge, RemoteProtocolError
from ergo_py.net import codec
from ergo_py.net.frames.ids import IdDecoder
from ergo_py.net.frames.layouts import (
    BATCHES,
    KNOWN_TYPES,
    SENDS,
    decode_frame,
    read_batch,
    read_pair,
)
from ergo_py.net.frames.types import (
    HEADER_MV,
    HEADER_SIZE,
    MAGIC,
    MAGIC_VERSION,
    VERSION,
    Close,
    Frame,
    Keepalive,
)

_COMPACT_AT = 64 * 1024  # bytes consumed before the buffer's head is cut off


class FrameDecoder:
    """Turns a byte stream into frames; data may be split at any byte.

    ``max_size`` is *our* max message size (0: unlimited): a header announcing
    a larger frame raises ``gen.ErrTooLarge`` before its body is buffered.
    Bad magic, version or type, and malformed bodies raise
    ``gen.RemoteProtocolError``. After either error the decoder is broken and
    raises the same error again: the link must be closed. Not thread-safe; one
    reader owns it.

    ``peer``: the node on the other end of the link. Every frame must then
    speak for one of its processes only (the sender of a message, call,
    reply, exit, link or monitor, the target of a down); one that names a
    process of another node raises :class:`gen.ImpersonationError`, so a
    peer cannot forge a reply or a signal on behalf of a third node. The
    decoder keeps its own identifier caches (an ``IdDecoder``), whose
    sender/recipient pairs are only those that passed that check.
    """

    __slots__ = ("_buf", "_error", "_ids", "_max_size", "_pos", "messages")

    def __init__(self, max_size: int = 0, peer: str | None = None) -> None:
        if max_size < 0:
            raise ErrIncorrect("max_size must be >= 0")
        self._max_size = max_size
        self._ids = IdDecoder(peer)
        self._buf = bytearray()
        self._pos = 0
        self._error: Exception | None = None
        # Frames drained that carry something for the node, each message of
        # a batch counted (keepalives and the Close are not): what a link
        # reports as its messages in.
        self.messages = 0

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the link.

        Raises the decoder's earlier error if it is broken (nothing more is
        buffered). The size limit is checked by the first :meth:`drain`
        after a header is complete, before any further bytes of its body are
        needed: a reader that drains after every read never holds more than
        one read chunk of an oversized frame.
        """
        if self._error is not None:
            raise self._error
        if self._pos and self._pos >= _COMPACT_AT and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def drain(self, out: list[Frame]) -> None:
        """Append every whole frame buffered so far to ``out``, in order.

        One call per read. Send frames come out as plain ``(from_, to,
        message)`` tuples (:data:`Send`), a send batch as one
        ``gen.SendBatch`` (its messages in order), the others as their
        classes; :attr:`messages` counts what came out, a batch as its
        messages. Keepalives are consumed, not appended: they carry
        nothing. It stops after a :class:`Close` (the last one appended;
        anything after it stays buffered, see :attr:`buffered`). On an error
        ``out`` holds the frames before the bad one, and the decoder is
        broken.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        end = len(buf)
        limit = self._max_size
        unpack = HEADER_MV.unpack_from
        known = KNOWN_TYPES
        sends = SENDS
        batches = BATCHES
        ids = self._ids
        pairs = ids.pairs
        decode = codec.decode
        append = out.append
        start = len(out)
        extra = 0  # a batch's messages beyond the one event it is
        try:
            while end - pos >= HEADER_SIZE:
                magic_version, total, _, code = unpack(buf, pos)
                if (
                    magic_version != MAGIC_VERSION
                    or code not in known
                    or total < HEADER_SIZE
                    or (limit and total > limit)
                ):
                    self._refuse(magic_version >> 8, magic_version & 0xFF, total, code)
                stop = pos + total
                if stop > end:
                    break
                body = buf[pos + HEADER_SIZE : stop]
                pos = stop
                if code in sends:  # [pair, is_tuple, message], read here: the hot path
                    values = decode(body)
                    if type(values) is list and len(values) == 3:
                        pair, is_tuple, message = values
                        hit = pairs.get(pair) if type(pair) is bytes else None
                        if hit is None or hit[0] != code:
                            hit = read_pair(code, pair, ids)
                        if is_tuple is True and type(message) is list:
                            append((hit[1], hit[2], tuple(message)))
                            continue
                        if is_tuple is False:
                            append((hit[1], hit[2], message))
                            continue
                    raise RemoteProtocolError(
                        f"{sends[code][0].__name__} frame: expected [pair, is_tuple, message]"
                    )
                if code in batches:
                    batch = read_batch(code, decode(body), ids)
                    append(batch)
                    extra += len(batch.messages) - 1
                    continue
                frame = decode_frame(code, body, ids)
                if type(frame) is Keepalive:
                    continue
                append(frame)
                if type(frame) is Close:
                    extra -= 1  # not a message
                    break
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        finally:
            self.messages += len(out) - start + extra
            if pos == end and pos:
                buf.clear()
                pos = 0
            self._pos = pos

    def _refuse(self, magic: int, version: int, total: int, code: int) -> None:
        exc: RemoteProtocolError | ErrTooLarge
        if magic != MAGIC:
            exc = RemoteProtocolError(f"bad frame magic {magic}")
        elif version != VERSION:
            exc = RemoteProtocolError(f"unsupported frame version {version}")
        elif code not in KNOWN_TYPES:
            exc = RemoteProtocolError(f"unknown frame type {code}")
        elif total < HEADER_SIZE:
            exc = RemoteProtocolError(f"frame length {total} is shorter than its header")
        else:
            exc = ErrTooLarge(f"frame of {total} bytes exceeds our limit of {self._max_size}")
        self._error = exc
        raise exc
