"""Dispatch: the frames that arrived on a link, in order, to the node's router.

Runs on the loop thread, behind ``ConnectionTable.hold_frames`` (frames of a
new connection wait while an older one still has frames on the way). A run
of plain messages goes to ``NodeRouter.route_sends`` at once, a send batch
(``gen.SendBatch``) to ``NodeRouter.route_batch`` as one; every other
frame is one router call, and the remote spawn frames go to
``node/spawn.py``. A frame that cannot be delivered is logged (rate-limited:
a peer can cause it) and the link serves on.
"""

from __future__ import annotations

import logging
from typing import Any

from ergo_py.gen.errors import ErgoError, ErrNoConnection
from ergo_py.gen.identifiers import PID, Ref
from ergo_py.gen.node import NodeRouter, RemoteTarget, SendBatch
from ergo_py.net import frames as fr
from ergo_py.net.link import LinkProtocol
from ergo_py.net.ratelog import LogLimiter
from ergo_py.node.spawn import RemoteSpawn

log = logging.getLogger(__name__)
# Lines a peer can cause (undeliverable frames): per kind, a few pass and the
# rest are counted (see net.ratelog).
_limited = LogLimiter(log)


class Dispatcher:
    """One node's inbound frames to its router (loop thread)."""

    def __init__(self, name: str, router: NodeRouter, spawn: RemoteSpawn) -> None:
        self._name = name
        self._router = router
        self._spawn = spawn
        # Refs of calls each peer made that are not answered yet (sets: one
        # add or discard is atomic, from the loop or any process thread); the
        # write path (node/write_path.py) discards them as it replies.
        self.owed: dict[str, set[Ref]] = {}

    def owes_replies(self, peer: str) -> bool:
        return bool(self.owed.get(peer))

    def node_down(self, peer: str, reason: ErrNoConnection) -> None:
        self.owed.pop(peer, None)  # the router forgets those calls: nobody will answer
        self._router.route_node_down(peer, reason)

    def dispatch_all(self, link: LinkProtocol, frames: list[fr.Frame]) -> None:
        """Route ``frames`` in order; a run of plain messages goes to the router at once.

        The run is handed over before any other frame (a send batch, a call,
        an exit, a down) is routed, so those still queue behind the messages
        before them. A send batch is routed as one (``route_batch``).
        """
        route_batch = self._router.route_batch
        run: list[tuple[PID, RemoteTarget, Any]] = []
        for frame in frames:
            if isinstance(frame, tuple):  # a send frame: (from_, to, message)
                run.append(frame)
                continue
            if run:
                self._route_sends(link, run)
                run = []
            if type(frame) is SendBatch:  # a burst from one sender to one recipient
                try:
                    route_batch(frame)
                except ErgoError as exc:
                    self._not_delivered(link, "message", exc)
                continue
            try:
                assert link.result is not None  # frames come only after the handshake
                self._dispatch(frame, link.result.peer_name)
            except ErgoError as exc:
                self._not_delivered(link, type(frame).__name__, exc)
        if run:
            self._route_sends(link, run)

    def _route_sends(self, link: LinkProtocol, run: list[tuple[PID, RemoteTarget, Any]]) -> None:
        for _, error in self._router.route_sends(run):
            self._not_delivered(link, "message", error)

    def _not_delivered(self, link: LinkProtocol, what: str, exc: ErgoError) -> None:
        peer = link.result.peer_name if link.result is not None else link.peer_address
        _limited.log(
            logging.INFO,
            (self._name, peer, what, type(exc)),
            "%s: frame %s from %s not delivered: %s",
            self._name,
            what,
            peer,
            exc,
        )

    def _dispatch(self, f: fr.Frame, peer: str) -> None:
        """Route one frame from ``peer`` other than a plain message (those go by runs)."""
        r = self._router
        if isinstance(f, (fr.CallPID, fr.CallName, fr.CallAlias)):
            owed = self.owed.get(f.from_.node)
            if owed is None:
                owed = self.owed[f.from_.node] = set()
            owed.add(f.ref)
            r.route_call(f.from_, f.to, f.ref, f.message)
        elif isinstance(f, fr.CallResponse):
            r.route_reply(f.from_, f.ref, f.result, None)
        elif isinstance(f, fr.CallError):
            err = f.error if isinstance(f.error, BaseException) else ErrNoConnection(str(f.error))
            r.route_reply(f.from_, f.ref, None, err)
        elif isinstance(f, fr.Exit):
            r.route_exit(f.from_, f.to, f.reason)
        elif isinstance(f, fr.Link):
            r.route_link(f.from_, f.target)
        elif isinstance(f, fr.Unlink):
            r.route_unlink(f.from_, f.target)
        elif isinstance(f, fr.Monitor):
            r.route_monitor(f.from_, f.target, f.ref)
        elif isinstance(f, fr.Demonitor):
            r.route_demonitor(f.from_, f.target, f.ref)
        elif isinstance(f, fr.DownFrame):
            r.route_down(f.target, f.to, f.ref, f.reason)
        elif isinstance(f, fr.SpawnRequest):
            self._spawn.requested(f)
        elif isinstance(f, fr.SpawnResult):
            self._spawn.result(f, peer)
