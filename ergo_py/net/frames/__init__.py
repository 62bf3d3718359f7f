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

from ergo_py.net.frames import types
from ergo_py.net.frames.layouts import BATCH_MAX, FrameEncoder, SendEntry, send_run, too_large
from ergo_py.net.frames.stream import FrameDecoder
from ergo_py.net.frames.types import *  # noqa: F403  (its __all__: what travels)

__all__ = [
    *types.__all__,
    "BATCH_MAX",
    "FrameDecoder",
    "FrameEncoder",
    "SendEntry",
    "send_run",
    "too_large",
]
