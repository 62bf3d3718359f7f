"""The frame codec (sans-IO): typed frames <-> bytes on an established link.

Wire shape, after the handshake::

    [78][2][uint32 BE total length, header included][order][type] body

``types`` holds what travels (the frame classes, the header, the type and
order bytes), ``ids`` how a frame's own identifiers are packed and cached,
``layouts`` the body of each frame type and a node's :class:`FrameEncoder`,
``stream`` the :class:`FrameDecoder` a link's reader drains. Nothing here
touches a socket: an encoder returns bytes, a decoder is fed bytes and
yields frames.

The ``order`` byte lets a receiver spread frames over several queues while
keeping per-sender FIFO: frames with the same non-zero order byte must be
delivered in arrival order; 0 means "unordered, any queue". See
:func:`order_byte` and :func:`frame_order`.

Use it as ``from ergo_py.net import frames as fr``; the names below are the
package's surface.
"""

from ergo_py.net.frames.layouts import BATCH_MAX, FrameEncoder, SendEntry, send_run, too_large
from ergo_py.net.frames.stream import FrameDecoder
from ergo_py.net.frames.types import (
    HEADER_SIZE,
    MAGIC,
    TYPE_CALL_ALIAS,
    TYPE_CALL_ERROR,
    TYPE_CALL_NAME,
    TYPE_CALL_PID,
    TYPE_CALL_RESPONSE,
    TYPE_CLOSE,
    TYPE_DEMONITOR,
    TYPE_DOWN,
    TYPE_EXIT,
    TYPE_KEEPALIVE,
    TYPE_LINK,
    TYPE_MONITOR,
    TYPE_SEND_ALIAS,
    TYPE_SEND_NAME,
    TYPE_SEND_PID,
    TYPE_SENDS_ALIAS,
    TYPE_SENDS_NAME,
    TYPE_SENDS_PID,
    TYPE_SPAWN_REQUEST,
    TYPE_SPAWN_RESULT,
    TYPE_UNLINK,
    VERSION,
    CallAlias,
    CallError,
    CallName,
    CallPID,
    CallResponse,
    Close,
    Demonitor,
    DownFrame,
    Exit,
    Frame,
    Keepalive,
    Link,
    Monitor,
    Send,
    SendAlias,
    SendName,
    SendPID,
    SpawnRequest,
    SpawnResult,
    Target,
    Unlink,
    frame_order,
    order_byte,
)

__all__ = [
    "BATCH_MAX",
    "HEADER_SIZE",
    "MAGIC",
    "TYPE_CALL_ALIAS",
    "TYPE_CALL_ERROR",
    "TYPE_CALL_NAME",
    "TYPE_CALL_PID",
    "TYPE_CALL_RESPONSE",
    "TYPE_CLOSE",
    "TYPE_DEMONITOR",
    "TYPE_DOWN",
    "TYPE_EXIT",
    "TYPE_KEEPALIVE",
    "TYPE_LINK",
    "TYPE_MONITOR",
    "TYPE_SENDS_ALIAS",
    "TYPE_SENDS_NAME",
    "TYPE_SENDS_PID",
    "TYPE_SEND_ALIAS",
    "TYPE_SEND_NAME",
    "TYPE_SEND_PID",
    "TYPE_SPAWN_REQUEST",
    "TYPE_SPAWN_RESULT",
    "TYPE_UNLINK",
    "VERSION",
    "CallAlias",
    "CallError",
    "CallName",
    "CallPID",
    "CallResponse",
    "Close",
    "Demonitor",
    "DownFrame",
    "Exit",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "Keepalive",
    "Link",
    "Monitor",
    "Send",
    "SendAlias",
    "SendEntry",
    "SendName",
    "SendPID",
    "SpawnRequest",
    "SpawnResult",
    "Target",
    "Unlink",
    "frame_order",
    "order_byte",
    "send_run",
    "too_large",
]
