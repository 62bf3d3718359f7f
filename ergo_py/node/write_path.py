"""The write path: frames a node sends, from process threads (and the loop) onto links.

Process threads call the ``NetworkBackend`` methods here: they encode the
frame on their own thread (so ``ErrTooLarge`` / ``ErrUnsupportedType`` reach
the sender), find or make the connection (waiting at most the connect plus
handshake timeouts), and queue the bytes on a link's batched writer
(``net/writer.py``). A peer speaking Ergo's dialect goes to
``node/ergo_wire.py`` instead.

Ordering: every frame for one (sender, recipient) pair travels on the same
link, chosen by the sender's order byte, so it arrives in order.

``WritePath`` is the base of ``node/network.py``'s ``TCPBackend``, which
makes the parts it writes through and hands them to ``__init__``; being
the backend itself (not a part it forwards to) keeps ``send``, which runs
per message, one dict look-up and the encoder away from the writer.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ergo_py.gen.errors import ErgoError, ErrIncorrect, ErrNoConnection, ErrTimeout, ErrUnsupported
from ergo_py.gen.identifiers import PID, Alias, ProcessID, Ref
from ergo_py.gen.node import NetworkBackend, RemoteTarget
from ergo_py.gen.options import POOL_GROW_AFTER
from ergo_py.net import frames as fr
from ergo_py.net.link import LinkProtocol
from ergo_py.net.writer import BatchWriter
from ergo_py.node.connections import Connection, ConnectionTable, ConnState
from ergo_py.node.context import NodeContext
from ergo_py.node.dialer import Dialer
from ergo_py.node.ergo_wire import ErgoWire

_CURRENT = ConnState.CURRENT  # the write path's check, without the class attribute look-up
_send_run = fr.send_run

# The call frame type for each kind of callee.
_CALL_CODES = {PID: fr.TYPE_CALL_PID, ProcessID: fr.TYPE_CALL_NAME, Alias: fr.TYPE_CALL_ALIAS}


class WritePath(NetworkBackend):
    """Sends, calls, replies and signals to other nodes (any thread; see the module)."""

    def __init__(
        self,
        *,
        ctx: NodeContext,
        table: ConnectionTable,
        dialer: Dialer,
        ergo: ErgoWire,
        owed: dict[str, set[Ref]],
    ) -> None:
        self._ctx = ctx
        self._table = table
        self._conns = table.conns  # the write path's look-up, one attribute away
        self._owing = table.owing
        self._dialer = dialer
        self._ergo = ergo
        self._encoder = fr.FrameEncoder()  # this node's identifier caches: shared with no other
        # Refs of calls each peer made that are not answered yet (node/dispatch.py
        # adds them; sets: one add or discard is atomic, from the loop or any thread).
        self._owed = owed

    def send_frame_from_loop(self, node: str, frame: fr.Frame) -> None:
        """Loop thread: write ``frame`` on a connection that is up (SpawnOwner)."""
        self._send_frame(node, frame, from_loop=True)

    def _connection(self, node: str) -> Connection:
        conn = self._conns.get(node)
        if conn is not None and conn.state is _CURRENT:
            return conn
        try:
            return self._ctx.lt.run(self._dialer.connect(node), timeout=self._ctx.dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot connect to {node}: {exc}") from exc

    def _send_frame(
        self, node: str, frame: fr.Frame, from_loop: bool = False, order: int | None = None
    ) -> None:
        if self._ergo.wants(node):
            raise ErrUnsupported(
                f"{type(frame).__name__} is not supported towards Ergo node {node}"
            )
        if order is None:
            order = fr.frame_order(frame)
        self._send_data(str(node), self._encoder.encode_frame(frame, order=order), order, from_loop)

    def _ready(self, node: str, order: int) -> tuple[Connection, LinkProtocol, BatchWriter] | None:
        """The write path's common case: the connection is current and ``order`` has its link."""
        conn = self._conns.get(node)
        if conn is None or conn.state is not _CURRENT:
            return None
        link = conn.sticky.get(order)
        if link is None or link.writer is None:
            return None
        return conn, link, link.writer

    def _send_data(self, node: str, data: bytes, order: int, from_loop: bool = False) -> None:
        """Write one encoded frame to ``node`` on the link for ``order``."""
        # The common case first; anything else goes the general way below, as
        # does a write refused because the link closed meanwhile (nothing was
        # written then).
        ready = None if from_loop else self._ready(node, order)
        if ready is not None:
            up, up_link, up_writer = ready
            limit = up.handshake.peer_max_message_size
            if limit and len(data) > limit:
                raise fr.too_large(len(data), limit)
            try:
                up_writer.write(data)
            except ErrNoConnection:
                pass
            else:
                self._wrote(up, up_link)
                return
        for _ in range(3):
            conn = self._owing.get(node)  # a reply owed on a connection that is closing
            if conn is None:
                conn = self._conns.get(node)
                if not from_loop and (conn is None or conn.state is not _CURRENT):
                    self._dial_and_send(node, data, order)
                    return
            if conn is None:
                raise ErrNoConnection(f"not connected to {node}")
            limit = conn.handshake.peer_max_message_size
            if limit and len(data) > limit:
                raise fr.too_large(len(data), limit)
            link = conn.pick(order)
            writer = link.writer
            if writer is None:
                raise ErrNoConnection(f"link to {node} is not ready")
            try:
                if from_loop:
                    writer.write_now(data)
                else:
                    writer.write(data)
            except ErrNoConnection:
                if conn.closing:
                    continue  # closed or handed over meanwhile: the next one takes it
                raise
            self._wrote(conn, link)
            return
        raise ErrNoConnection(f"connection to {node} keeps closing")

    def _dial_and_send(self, node: str, data: bytes, order: int) -> None:
        """Process thread: dial ``node``, and write ``data`` from the loop once it is up.

        The write follows the handshake on the loop, instead of after a
        hand-over back to this thread and another one to the loop (about a
        fifth of a millisecond per set-up here).
        """

        async def dial_and_send() -> None:
            await self._dialer.connect(node)
            self._send_data(node, data, order, from_loop=True)

        try:
            self._ctx.lt.run(dial_and_send(), timeout=self._ctx.dial_budget)
        except ErrTimeout as exc:
            raise ErrNoConnection(f"cannot connect to {node}: {exc}") from exc

    def _wrote(self, conn: Connection, link: LinkProtocol) -> None:
        """Count a frame out; a busy connection opens the rest of its pool."""
        link.messages_out += 1
        if conn.grow is not None and link.messages_out >= POOL_GROW_AFTER:
            self._wrote_grow(conn)

    def _wrote_grow(self, conn: Connection) -> None:
        if not conn.growing:
            conn.growing = True
            with contextlib.suppress(ErgoError):  # stopping: no pool to grow
                self._ctx.lt.call_soon(self._dialer.grow, conn)

    def send(self, from_pid: PID, to: RemoteTarget, message: Any) -> None:
        order = 1 + from_pid.id % 255  # fr.order_byte, inline: this runs per message
        node = to.node  # an Atom is a str: it finds the connection without a copy
        # The common case (as _ready and _wrote, inline): the sender's link is
        # up. The message goes to its writer as an item, so that a burst from
        # one process to one recipient leaves as one batch frame.
        conn = self._conns.get(node)
        if conn is not None and conn.state is _CURRENT:
            link = conn.sticky.get(order)
            writer = link.writer if link is not None else None
            if link is not None and writer is not None:
                limit = conn.handshake.peer_max_message_size
                entry, item = self._encoder.send_item(from_pid, to, message, order, limit)
                try:
                    writer.write_item(entry, order, item, _send_run, len(entry[3]) + 16)
                except ErrNoConnection:
                    pass  # closed meanwhile: nothing was written, go the general way
                else:
                    link.messages_out += 1
                    if conn.grow is not None and link.messages_out >= POOL_GROW_AFTER:
                        self._wrote_grow(conn)
                    return
        if self._ergo.wants(node):
            self._ergo.send(from_pid, to, message)
            return
        self._send_data(node, self._encoder.encode_send(from_pid, to, message, order), order)

    def call(self, from_pid: PID, to: RemoteTarget, ref: Ref, request: Any) -> None:
        code = _CALL_CODES.get(type(to))
        if code is None:
            raise ErrIncorrect(f"cannot call {to!r}")
        if self._ergo.wants(to.node):
            self._ergo.call(from_pid, to, ref, request)
            return
        order = fr.order_byte(from_pid.id)
        data = self._encoder.encode_call(code, from_pid, to, ref, request, order)
        self._send_data(to.node, data, order)

    def reply(
        self, from_pid: PID, to: PID, ref: Ref, value: Any, error: BaseException | None
    ) -> None:
        if self._ergo.wants(to.node):
            self._ergo.reply(from_pid, to, ref, value, error)
            return
        try:
            if error is not None:
                self._send_frame(to.node, fr.CallError(from_pid, to, ref, error))
                return
            order = fr.order_byte(from_pid.id)
            try:
                data = self._encoder.encode_call(
                    fr.TYPE_CALL_RESPONSE, from_pid, to, ref, value, order
                )
                self._send_data(to.node, data, order)
            except ErgoError as exc:
                if isinstance(exc, ErrNoConnection):
                    raise
                # The value cannot travel (too large, unencodable): the caller learns why.
                self._send_frame(to.node, fr.CallError(from_pid, to, ref, exc))
        finally:
            owed = self._owed.get(to.node)
            if owed is not None:
                owed.discard(ref)
                if not owed and to.node in self._owing:
                    # Written (queued on the link) before this: the Close goes behind it.
                    with contextlib.suppress(ErgoError):
                        self._ctx.lt.call_soon(self._table.replies_written, to.node)

    def link(self, from_pid: PID, target: RemoteTarget) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.link(from_pid, target)
            return
        self._send_frame(target.node, fr.Link(from_pid, target))

    def unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.unlink(from_pid, target)
            return
        self._send_frame(target.node, fr.Unlink(from_pid, target))

    def monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.monitor(from_pid, target, ref)
            return
        self._send_frame(target.node, fr.Monitor(from_pid, target, ref))

    def demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        if self._ergo.wants(target.node):
            self._ergo.watches.demonitor(from_pid, target, ref)
            return
        self._send_frame(target.node, fr.Demonitor(from_pid, target, ref))

    def exit(
        self, from_target: RemoteTarget, to: PID, reason: Any, ended: PID | None = None
    ) -> None:
        if self._ergo.wants(to.node):
            self._ergo.watches.exit(from_target, to, reason, ended)
            return
        order = fr.order_byte(ended.id) if ended is not None else None
        self._send_frame(to.node, fr.Exit(from_target, to, reason), order=order)

    def down(
        self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any, ended: PID | None = None
    ) -> None:
        if self._ergo.wants(to.node):
            self._ergo.watches.down(from_target, to, ref, reason, ended)
            return
        order = fr.order_byte(ended.id) if ended is not None else None
        self._send_frame(to.node, fr.DownFrame(to, from_target, ref, reason), order=order)

    def connect(self, node: str) -> None:
        if self._ergo.wants(node):
            self._ergo.connection(node)
            return
        self._connection(node)
