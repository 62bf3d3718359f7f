"""A Python node and a real Go Ergo node (the peer in gopeer/) over Ergo's own protocol.

Both directions over TLS from the cert managers: Python dials Go verifying
its certificate with the CertAuthManager's root CAs; Go dials Python with
InsecureSkipVerify (Ergo's dialer has no root-CA option in this version).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import pytest
from interop_pair import (  # noqa: F401  (fixtures, by their names)
    GO,
    HOSTS,
    PY,
    WAIT,
    Pair,
    SenderSink,
    binary_fixture,
    ergo_acceptor_fixture,
    go_args_fixture,
    go_echo,
    go_stats,
    pair_fixture,
)

from ergo_py import act, gen
from ergo_py.net.ergo.edf import RemoteError

# The first test of a fresh checkout builds the Go peer (20-60 s on 2 cores).
pytestmark = pytest.mark.timeout(300)


def test_calls_both_ways_over_tls(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    for i in range(1000):
        assert node.call(go_echo(), i) == i
    assert node.call(go_echo(), "text") == "text"
    assert node.call(go_echo(), gen.Atom("atom")) == gen.Atom("atom")
    info = node.network().info(GO)
    assert info["protocol"] == "ergo" and info["tls_version"] == "TLSv1.3"

    node.spawn_register("sink", SenderSink, queue.Queue())
    pair.go_routes_to_python()
    assert peer.command(f"call {PY} sink 1000") == "ok calls 1000"
    assert peer.command(f"callone {PY} sink hello there") == "ok string hello there"


def test_ten_thousand_ordered_messages_each_way(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    assert node.call(go_echo(), "reset") == "ok"
    for i in range(10_000):
        node.send(go_echo(), i)
    assert go_stats(node, 10_000) == "count=10000 disorder=0"

    out: queue.Queue[Any] = queue.Queue()
    node.spawn_register("sink", SenderSink, out)
    pair.go_routes_to_python()
    assert peer.command(f"send {PY} sink 10000") == "ok sent 10000"
    got = [out.get(timeout=WAIT) for _ in range(10_000)]
    senders = {sender for sender, _ in got}
    assert len(senders) == 1 and next(iter(senders)).node == GO
    assert [message for _, message in got] == list(range(10_000))
    assert out.empty()


class Watcher(act.Actor):
    """Traps exits; links or monitors what it is told to; reports exits and downs."""

    def init(self, out: queue.Queue[Any]) -> None:
        self.out = out
        self.trap_exit = True

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        kind, target = request
        result = "linked" if kind == "link" else None
        if kind == "link":
            self.link(target)
        else:
            result = self.monitor(target)
        # A link is a request the Go node answers later; a call from the same
        # process travels behind it, so once this returns the link is in place.
        self.call(gen.ProcessID("echo", target.node), "sync")
        return result

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put(message)


class Victim(act.Actor):
    def handle_message(self, sender: gen.PID, message: Any) -> None:
        if message == "crash":
            raise RuntimeError("the Python victim crashed")
        self.stop()

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return request


def test_go_process_linked_to_python_process_gets_its_exit(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    pair.go_routes_to_python()
    by_name = node.spawn_register("victim", Victim)
    by_pid = node.spawn(Victim)
    assert peer.command(f"link {PY} victim") == "ok watching"
    assert peer.command(f"link {PY} {by_pid.id} {by_pid.creation}") == "ok watching"
    assert peer.command(f"monitor {PY} {by_pid.id} {by_pid.creation}") == "ok watching"
    node.send(by_name, "crash")
    exit_name = peer.event()
    assert exit_name.startswith("exit ") and "victim" in exit_name
    assert exit_name.endswith("the Python victim crashed")
    node.send(by_pid, "stop")
    events = sorted([peer.event(), peer.event()])
    assert events[0].startswith("down ") and events[0].endswith(" normal")
    assert events[1].startswith("exit ") and events[1].endswith(" normal")
    # A link to a process that does not exist is refused, as in Ergo.
    assert peer.command(f"link {PY} nobody") == "err unknown process"


def test_python_process_linked_to_go_process_gets_its_exit(pair: Pair) -> None:
    # By registered name: Ergo v3.2-dev drops the termination notice of a
    # process linked or monitored by PID from another node (its
    # SendTerminatePID compares the target's creation with the *peer's*; see
    # docs/interop.md), so a PID link fires only when the connection drops.
    node, peer = pair.node, pair.peer
    assert peer.command("spawn target").startswith("ok ")
    target = gen.ProcessID("target", GO)
    out: queue.Queue[Any] = queue.Queue()
    linker = node.spawn(Watcher, out)
    monitor = node.spawn(Watcher, out)
    assert node.call(linker, ("link", target)) == "linked"
    ref = node.call(monitor, ("monitor", target))
    assert peer.command("stop target") == "ok stopping"
    got = {type(m).__name__: m for m in (out.get(timeout=WAIT), out.get(timeout=WAIT))}
    assert set(got) == {"MessageExitProcessID", "MessageDownProcessID"}
    assert got["MessageExitProcessID"].process_id == target
    assert got["MessageDownProcessID"].ref == ref
    for message in got.values():
        assert isinstance(message.reason, RemoteError)
        assert str(message.reason) == "stopped by the test"
    # Linking a Go process that is gone: the exit comes back at once.
    node.call(linker, ("link", target))
    late = out.get(timeout=WAIT)
    assert isinstance(late, gen.MessageExitProcessID)
    assert isinstance(late.reason, gen.ErrProcessUnknown)


def test_go_certificate_rotated_while_calls_run(pair: Pair) -> None:
    node = pair.node
    before = node.call(go_echo(), "first") and node.network().info(GO)["peer_cert_fingerprint"]
    failures: list[BaseException] = []
    done = threading.Event()
    calls = [0]

    def caller() -> None:
        while not done.is_set():
            try:
                assert node.call(go_echo(), calls[0]) == calls[0]
                calls[0] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        time.sleep(0.2)
        new = pair.write_go_cert()
        assert pair.peer.reload() == new != before
        time.sleep(0.2)
    finally:
        done.set()
        thread.join(WAIT)
    assert failures == [] and calls[0] > 10
    # The connection that is up keeps its certificate; the next dial sees the new one.
    assert node.network().info(GO)["peer_cert_fingerprint"] == before
    node.network().disconnect(GO)
    assert node.call(go_echo(), "after") == "after"
    assert node.network().info(GO)["peer_cert_fingerprint"] == new


def test_python_certificate_rotated_next_go_dial_succeeds(pair: Pair) -> None:
    node, peer, cam = pair.node, pair.peer, pair.cam
    node.spawn_register("sink", SenderSink, queue.Queue())
    pair.go_routes_to_python()
    assert peer.command(f"callone {PY} sink one") == "ok string one"
    old = node.network().info(GO)["local_cert_fingerprint"]
    assert old == cam.get_certificate().fingerprint
    fresh = pair.ca.issue(PY, hosts=HOSTS)
    cam.update(fresh)
    assert peer.command(f"disconnect {PY}") == "ok disconnected"
    deadline = time.monotonic() + WAIT
    while GO in node.network().nodes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peer.command(f"callone {PY} sink two") == "ok string two"
    info = node.network().info(GO)
    assert info["dialed"] is False
    assert info["local_cert_fingerprint"] == fresh.fingerprint != old


def test_wrong_cookie_refused_on_both_sides(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    node, peer = pair.node, pair.peer
    # Python dials Go with a cookie Go does not share.
    route = gen.NetworkRoute(
        host="127.0.0.1", port=peer.port, tls=True, cookie="wrong", protocol="ergo"
    )
    node.network().add_route("gowrong@localhost", route)
    with pytest.raises(gen.ErrNoConnection, match="cookie"):
        node.call(gen.ProcessID("echo", "gowrong@localhost"), "x")
    # Go dials Python with a cookie Python does not share.
    node.spawn_register("sink", SenderSink, queue.Queue())
    pair.go_routes_to_python(cookie="wrong")
    with caplog.at_level(logging.INFO, logger="ergo_py.node.ergo_link"):
        answer = peer.command(f"callone {PY} sink x")
    assert answer.startswith("err ")
    assert any("incorrect digest from the Ergo dialer" in r.getMessage() for r in caplog.records)
    assert GO not in node.network().nodes()
