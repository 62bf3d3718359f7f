"""Links and monitors across to Go Ergo nodes: who holds what, and the requests both ways.

A link or monitor is a request the peer answers (``MessageResult``); a
refusal comes back here as an exit or a down. When a Go process ends, its
node sends one "terminated" packet and we fan it out to our holders (kept
here), as Ergo's core does. A request from Go is routed to our processes and
answered with the error, if any, that our node produced while routing it.

Thread safety: requests go out from process threads; what arrives is handled
on the node's loop thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ergo_py.gen.identifiers import PID, Ref
from ergo_py.gen.node import NodeRouter, RemoteTarget
from ergo_py.net.ergo import enp
from ergo_py.net.loop import LoopThread
from ergo_py.node.ergo_link import ErgoLink
from ergo_py.node.ergo_pool import ErgoConnection, Wire


@dataclass
class _Holders:
    """Our processes that link or monitor one process of a peer."""

    links: set[PID] = field(default_factory=set)
    monitors: dict[Ref, PID] = field(default_factory=dict)


class ErgoWatches:
    """Our links and monitors on Go processes, and Go's requests for ours."""

    def __init__(self, wire: Wire, router: NodeRouter, lt: LoopThread) -> None:
        self._wire = wire
        self._router = router
        self._lt = lt
        self._holders: dict[RemoteTarget, _Holders] = {}
        self._holders_lock = threading.Lock()
        self._results: dict[Ref, Callable[[Any], None]] = {}
        self._checking: dict[tuple[PID, RemoteTarget], Any] = {}

    # --- outbound (process threads) ----------------------------------------------------

    def _request(self, kind: str, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        """A link or monitor request; a refusal comes back as an exit or a down."""
        conn = self._wire.connection(target.node)
        struct = enp.LinkRequest(kind, from_pid, target, ref)
        if kind in ("Link", "Monitor"):

            def refused(error: Any) -> None:
                if error is None:
                    return
                self._forget(kind, from_pid, target, ref)
                if kind == "Link":
                    self._router.route_exit(target, from_pid, error)
                else:
                    self._router.route_down(target, from_pid, ref, error)

            self._results[ref] = refused
        self._wire.write(conn, conn.codec.control(struct, enp.order_of(from_pid.id)))

    def _forget(self, kind: str, holder: PID, target: RemoteTarget, ref: Ref) -> None:
        with self._holders_lock:
            held = self._holders.get(target)
            if held is not None:
                if kind == "Link":
                    held.links.discard(holder)
                else:
                    held.monitors.pop(ref, None)
                if not held.links and not held.monitors:
                    del self._holders[target]

    def link(self, from_pid: PID, target: RemoteTarget) -> None:
        with self._holders_lock:
            self._holders.setdefault(target, _Holders()).links.add(from_pid)
        self._request("Link", from_pid, target, self._wire.new_ref())

    def unlink(self, from_pid: PID, target: RemoteTarget) -> None:
        self._forget("Link", from_pid, target, self._wire.new_ref())
        self._request("Unlink", from_pid, target, self._wire.new_ref())

    def monitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        with self._holders_lock:
            self._holders.setdefault(target, _Holders()).monitors[ref] = from_pid
        self._request("Monitor", from_pid, target, ref)

    def demonitor(self, from_pid: PID, target: RemoteTarget, ref: Ref) -> None:
        self._forget("Monitor", from_pid, target, ref)
        self._request("Demonitor", from_pid, target, self._wire.new_ref())

    def exit(self, from_target: RemoteTarget, to: PID, reason: Any, ended: PID | None) -> None:
        key = (to, from_target)
        if key in self._checking:  # a request of the peer's being answered: this is the answer
            self._checking[key] = reason
            return
        conn = self._wire.connection(to.node, from_loop=self._lt.in_loop_thread())
        if ended is None and isinstance(from_target, PID):  # an exit signal (send_exit)
            self._wire.write(conn, conn.codec.exit(from_target, to, reason))
            return
        self._terminated(conn, from_target, reason, ended)

    def down(
        self, from_target: RemoteTarget, to: PID, ref: Ref, reason: Any, ended: PID | None
    ) -> None:
        key = (to, from_target)
        if key in self._checking:
            self._checking[key] = reason
            return
        conn = self._wire.connection(to.node, from_loop=self._lt.in_loop_thread())
        self._terminated(conn, from_target, reason, ended)

    def _terminated(
        self, conn: ErgoConnection, target: RemoteTarget, reason: Any, ended: PID | None
    ) -> None:
        order = enp.order_of(ended.id if ended is not None else getattr(target, "id", 0))
        self._wire.write(
            conn, conn.codec.terminated(target, reason, order), self._lt.in_loop_thread()
        )

    # --- inbound (loop thread) ---------------------------------------------------------

    def terminated(self, event: enp.Terminated) -> None:
        """A Go process ended: every holder of ours gets its exit or down."""
        with self._holders_lock:
            held = self._holders.pop(event.target, None)
        if held is not None:
            for pid in held.links:
                self._router.route_exit(event.target, pid, event.reason)
            for ref, pid in held.monitors.items():
                self._router.route_down(event.target, pid, ref, event.reason)

    def answered(self, message: enp.Result) -> None:
        """The peer's answer to one of our link or monitor requests."""
        answer = self._results.pop(message.ref, None)
        if answer is not None:
            answer(message.error)

    def requested(self, conn: ErgoConnection, link: ErgoLink, message: enp.LinkRequest) -> None:
        """A Go process links or monitors one of ours: route it, answer with what came of it."""
        r = self._router
        source, target = message.source, message.target
        key = (source, target)
        self._checking[key] = None
        try:
            if message.kind == "Link":
                r.route_link(source, target)
            elif message.kind == "Unlink":
                r.route_unlink(source, target)
            elif message.kind == "Monitor":
                r.route_monitor(source, target, message.ref)
            else:
                r.route_demonitor(source, target, message.ref)
        finally:
            error = self._checking.pop(key, None)
        result = enp.Result(error, None, message.ref)
        link.write_now(conn.codec.control(result, enp.order_of(source.id)))

    def connection_lost(self, peer: str) -> None:
        """Forget what we held on ``peer`` (the node fires its links and monitors itself)."""
        with self._holders_lock:
            for target in [t for t in self._holders if t.node == peer]:
                del self._holders[target]
