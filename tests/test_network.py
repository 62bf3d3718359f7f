"""Two and three real nodes in one process over loopback (mTLS unless said otherwise)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import WAIT, Recorder, get, wait_threads_gone

from ergo_py import act, gen, lib
from ergo_py.testing import Cluster, Sink, Watcher, free_port


@pytest.fixture
def nodes() -> Iterator[Cluster]:
    """Nodes started one by one on 127.0.0.1, mTLS with the cluster's CA unless told otherwise."""
    before = set(threading.enumerate())
    with Cluster(names=[], cookie="cookie", start=False) as cluster:
        yield cluster
    assert wait_threads_gone(before) == []


class SlowPong(act.Actor):
    """``ergo_py.testing.Pong``, except that a ``"slow"`` call takes 3 s."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "slow":
            time.sleep(3)  # well past the moment the test disconnects
        return ("pong", request)


def test_call_to_a_registered_name_on_another_node(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 42) == ("pong", 42)


def test_send_to_a_remote_pid_and_reply_by_sender(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    out: queue.Queue[Any] = queue.Queue()
    pid = b.spawn(Recorder, out)
    a.send(pid, {"hello": (1, 2)})
    sender, message = get(out)
    assert message == {"hello": (1, 2)}
    assert sender.node == "a@127.0.0.1"


def test_messages_from_one_sender_arrive_in_order(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    out: queue.Queue[Any] = queue.Queue()
    pid = b.spawn(Sink, out)
    for i in range(10_000):
        a.send(pid, i)
    assert [out.get(timeout=WAIT) for _ in range(10_000)] == list(range(10_000))


def test_remote_monitor_fires_when_the_process_ends(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    target_out: queue.Queue[Any] = queue.Queue()
    target = b.spawn(Recorder, target_out)
    watcher_out: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, target, watcher_out)
    time.sleep(0.2)  # let the monitor request cross before the target ends
    b.send(target, "stop")
    down = get(watcher_out)
    assert isinstance(down, gen.MessageDownPID)
    assert down.pid == target


def test_remote_link_delivers_an_exit_to_a_trapping_linker(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    target = b.spawn(Recorder, queue.Queue())
    out: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, target, out, "link")
    time.sleep(0.2)
    b.send(target, "crash")
    exit_msg = get(out)
    assert isinstance(exit_msg, gen.MessageExitPID)
    assert exit_msg.pid == target


def test_node_down_fails_pending_calls_at_once_and_fires_monitors(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    # b holds its Close for replies it owes for half its handshake timeout (1 s
    # here), less than the slow call takes: the call fails then, not later.
    options = nodes.node_options("b@127.0.0.1")
    options.network.handshake_timeout = 2.0
    b = nodes.start("b@127.0.0.1", options)
    b.spawn_register("pong", SlowPong)
    pong = gen.ProcessID("pong", "b@127.0.0.1")
    assert a.call(pong, 1) == ("pong", 1)
    out: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, pong, out)
    errors: queue.Queue[Any] = queue.Queue()

    def slow_call() -> None:
        try:
            a.call(pong, "slow", timeout=20)
        except gen.ErgoError as exc:
            errors.put(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)
    started = time.monotonic()
    a.network().disconnect("b@127.0.0.1")
    err = get(errors)
    caller.join(WAIT)
    assert isinstance(err, gen.ErrNoConnection)
    assert time.monotonic() - started < 2.5  # before the callee could answer
    down = get(out)
    assert isinstance(down, gen.MessageDownProcessID)
    assert isinstance(down.reason, gen.ErrNoConnection)


def test_next_send_after_disconnect_reconnects(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    pong = gen.ProcessID("pong", "b@127.0.0.1")
    assert a.call(pong, 1) == ("pong", 1)
    a.network().disconnect("b@127.0.0.1")
    assert a.call(pong, 2) == ("pong", 2)


def test_new_connections_present_the_rotated_certificate(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    pong = gen.ProcessID("pong", "b@127.0.0.1")
    a.call(pong, 1)
    first = a.network().info("b@127.0.0.1")
    cam = nodes.managers["b@127.0.0.1"]
    cam.update(nodes.ca.issue("b@127.0.0.1", hosts=("127.0.0.1",)))
    assert a.call(pong, 2) == ("pong", 2)  # the old connection carries on
    assert (
        a.network().info("b@127.0.0.1")["peer_cert_fingerprint"] == first["peer_cert_fingerprint"]
    )
    a.network().disconnect("b@127.0.0.1")
    assert a.call(pong, 3) == ("pong", 3)
    second = a.network().info("b@127.0.0.1")
    assert second["peer_cert_fingerprint"] == cam.get_certificate().fingerprint
    assert second["peer_cert_fingerprint"] != first["peer_cert_fingerprint"]
    assert second["identity_verified"] is True


def test_static_route_without_registrar(nodes: Cluster) -> None:
    b_opts = nodes.node_options("b@127.0.0.1", tls=False)
    b_opts.network.registrar_enabled = False
    b = nodes.start("b@127.0.0.1", b_opts)
    b.spawn_register("pong", SlowPong)
    a_opts = nodes.node_options("a@127.0.0.1", tls=False)
    a_opts.network.registrar_enabled = False
    a = nodes.start("a@127.0.0.1", a_opts)
    port = b_opts.network.acceptors[0].port
    a.network().add_route("b@.*", gen.NetworkRoute(host="127.0.0.1", port=port))
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), "x") == ("pong", "x")


def test_a_removed_static_route_is_no_longer_dialled(nodes: Cluster) -> None:
    b_opts = nodes.node_options("b@127.0.0.1", tls=False)
    b_opts.network.registrar_enabled = False
    b = nodes.start("b@127.0.0.1", b_opts)
    b.spawn_register("pong", SlowPong)
    a_opts = nodes.node_options("a@127.0.0.1", tls=False)
    a_opts.network.registrar_enabled = False
    a = nodes.start("a@127.0.0.1", a_opts)
    port = b_opts.network.acceptors[0].port
    a.network().add_route("b@.*", gen.NetworkRoute(host="127.0.0.1", port=port))
    with pytest.raises(gen.ErrTaken):
        a.network().add_route("b@.*", gen.NetworkRoute(host="127.0.0.1", port=port))
    a.network().remove_route("b@.*")
    with pytest.raises(gen.ErrNoRoute):
        a.network().remove_route("b@.*")
    with pytest.raises(gen.ErrNoConnection, match="no route"):
        a.call(gen.ProcessID("pong", "b@127.0.0.1"), "x")
    a.network().add_route("b@.*", gen.NetworkRoute(host="127.0.0.1", port=port))  # free again
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), "y") == ("pong", "y")


def test_bad_cookie_is_refused_and_the_acceptor_keeps_serving(nodes: Cluster) -> None:
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    a = nodes.start("a@127.0.0.1")
    intruder = nodes.start("x@127.0.0.1", cookie="wrong")
    with pytest.raises(gen.ErrNoConnection, match="bad cookie"):
        intruder.call(gen.ProcessID("pong", "b@127.0.0.1"), 1)
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 2) == ("pong", 2)


def test_unknown_ca_is_refused(nodes: Cluster) -> None:
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    stranger_ca = lib.CertificateAuthority.create("stranger")
    options = nodes.node_options("s@127.0.0.1")
    cam = gen.create_cert_auth_manager(stranger_ca.issue("s@127.0.0.1", hosts=("127.0.0.1",)))
    cam.set_root_cas(nodes.ca.pool())
    options.cert_manager = cam
    s = nodes.start("s@127.0.0.1", options)
    with pytest.raises(gen.ErrNoConnection):
        s.call(gen.ProcessID("pong", "b@127.0.0.1"), 1, timeout=10)


def test_stalled_handshake_times_out_and_the_acceptor_keeps_serving(nodes: Cluster) -> None:
    opts = nodes.node_options("b@127.0.0.1", tls=False)
    opts.network.acceptors[0].handshake_timeout = 0.3
    b = nodes.start("b@127.0.0.1", opts)
    b.spawn_register("pong", SlowPong)
    port = opts.network.acceptors[0].port
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        raw.settimeout(WAIT)
        assert raw.recv(1024) is not None  # the reject, then EOF
        deadline = time.monotonic() + WAIT
        while raw.recv(1024) and time.monotonic() < deadline:
            pass
    a = nodes.start("a@127.0.0.1", tls=False)
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 1) == ("pong", 1)


def test_garbage_instead_of_a_handshake_is_refused(nodes: Cluster) -> None:
    opts = nodes.node_options("b@127.0.0.1", tls=False)
    b = nodes.start("b@127.0.0.1", opts)
    b.spawn_register("pong", SlowPong)
    with socket.create_connection(("127.0.0.1", opts.network.acceptors[0].port)) as raw:
        raw.settimeout(WAIT)
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        deadline = time.monotonic() + WAIT
        while raw.recv(1024) and time.monotonic() < deadline:
            pass
    a = nodes.start("a@127.0.0.1", tls=False)
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 1) == ("pong", 1)


def test_oversized_message_is_refused_at_the_sender(nodes: Cluster) -> None:
    opts = nodes.node_options("b@127.0.0.1")
    opts.network.max_message_size = 4096
    b = nodes.start("b@127.0.0.1", opts)
    out: queue.Queue[Any] = queue.Queue()
    pid = b.spawn(Sink, out)
    a = nodes.start("a@127.0.0.1")
    with pytest.raises(gen.ErrTooLarge):
        a.send(pid, b"x" * 10_000)
    a.send(pid, "small")
    assert get(out) == "small"


def test_three_nodes_call_each_other(nodes: Cluster) -> None:
    names = ["a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"]
    started = [nodes.start(n) for n in names]
    for node in started:
        node.spawn_register("pong", SlowPong)
    for node in started:
        for other in names:
            if other != node.name:
                assert node.call(gen.ProcessID("pong", other), node.name) == ("pong", node.name)
    assert started[0].network().nodes() == names[1:]


def _wait_for(pred: Any, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


def _eager_pool(nodes: Cluster, name: str) -> gen.Node:
    """A node that opens every pool link at connect time (not on demand)."""
    options = nodes.node_options(name)
    options.network.pool_on_demand = False
    return nodes.start(name, options)


def test_a_connection_is_a_pool_of_three_links_on_both_sides(nodes: Cluster) -> None:
    a = _eager_pool(nodes, "a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    a.call(gen.ProcessID("pong", "b@127.0.0.1"), 1)
    assert _wait_for(lambda: a.network().info("b@127.0.0.1")["pool_links"] == 3)
    assert _wait_for(lambda: b.network().info("a@127.0.0.1")["pool_links"] == 3)


def test_the_pool_grows_once_the_connection_is_busy(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    out: queue.Queue[Any] = queue.Queue()
    sink = b.spawn(Sink, out)
    a.send(sink, -1)
    assert out.get(timeout=WAIT) == -1
    assert a.network().info("b@127.0.0.1")["pool_links"] == 1  # idle: one TLS link
    n = gen.POOL_GROW_AFTER
    for i in range(n):
        a.send(sink, i)
    assert [out.get(timeout=WAIT) for _ in range(n)] == list(range(n))
    assert _wait_for(lambda: a.network().info("b@127.0.0.1")["pool_links"] == 3)
    assert _wait_for(lambda: b.network().info("a@127.0.0.1")["pool_links"] == 3)


def test_many_senders_keep_their_own_order_across_the_pool(nodes: Cluster) -> None:
    a = _eager_pool(nodes, "a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    out: queue.Queue[Any] = queue.Queue()
    sink = b.spawn(Sink, out)

    class Sender(act.Actor):
        def init(self, tag: int) -> None:
            self.tag = tag

        def handle_message(self, sender: gen.PID, message: Any) -> None:
            for i in range(1000):
                self.send(sink, (self.tag, i))

    a.network().get_node("b@127.0.0.1")
    assert _wait_for(lambda: a.network().info("b@127.0.0.1")["pool_links"] == 3)
    senders = [a.spawn(Sender, tag) for tag in range(8)]
    for pid in senders:
        a.send(pid, "go")
    seen: dict[int, list[int]] = {}
    for _ in range(8000):
        tag, i = out.get(timeout=WAIT)
        seen.setdefault(tag, []).append(i)
    assert all(seen[tag] == list(range(1000)) for tag in range(8))
    links = a.network().info("b@127.0.0.1")["links"]
    assert sum(1 for link in links if link["messages_out"] > 0) > 1  # the pool is used


def test_reconnected_pool_links_all_present_the_rotated_certificate(nodes: Cluster) -> None:
    a = _eager_pool(nodes, "a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    pong = gen.ProcessID("pong", "b@127.0.0.1")
    a.call(pong, 1)
    cam = nodes.managers["a@127.0.0.1"]
    cam.update(nodes.ca.issue("a@127.0.0.1", hosts=("127.0.0.1",)))
    a.network().disconnect("b@127.0.0.1")
    a.call(pong, 2)
    assert _wait_for(lambda: a.network().info("b@127.0.0.1")["pool_links"] == 3)
    links = a.network().info("b@127.0.0.1")["links"]
    assert [link["local_cert_version"] for link in links] == [cam.version] * 3
    assert _wait_for(lambda: b.network().info("a@127.0.0.1")["pool_links"] == 3)
    seen_by_b = {link["peer_cert_fingerprint"] for link in b.network().info("a@127.0.0.1")["links"]}
    assert seen_by_b == {cam.get_certificate().fingerprint}


def test_hidden_node_dials_out_but_does_not_listen(nodes: Cluster) -> None:
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    opts = nodes.node_options("h@127.0.0.1")
    opts.network.mode = gen.NetworkMode.HIDDEN
    hidden = nodes.start("h@127.0.0.1", opts)
    assert hidden.call(gen.ProcessID("pong", "b@127.0.0.1"), 1) == ("pong", 1)
    port = opts.network.acceptors[0].port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_simultaneous_connect_ends_with_one_connection(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    a.spawn_register("pong", SlowPong)
    b.spawn_register("pong", SlowPong)
    results: list[Any] = []

    def call(src: gen.Node, dst: str) -> None:
        results.append(src.call(gen.ProcessID("pong", dst), src.name))

    threads = [
        threading.Thread(target=call, args=(a, "b@127.0.0.1")),
        threading.Thread(target=call, args=(b, "a@127.0.0.1")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * WAIT)
    assert sorted(results) == [("pong", "a@127.0.0.1"), ("pong", "b@127.0.0.1")]
    cid_a = a.network().info("b@127.0.0.1")["connection_id"]
    assert _wait_for(lambda: b.network().nodes() == ["a@127.0.0.1"])
    assert b.network().info("a@127.0.0.1")["connection_id"] == cid_a


class Greeter(act.Actor):
    def init(self, greeting: str) -> None:
        self.greeting = greeting

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        return f"{self.greeting}, {request}"


def test_remote_spawn_is_refused_until_enabled(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    nodes.start("b@127.0.0.1")
    with pytest.raises(gen.ErrNameUnknown):
        a.network().get_node("b@127.0.0.1").spawn("greeter", "hello")


def test_remote_spawn_of_an_enabled_factory(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.network().enable_spawn("greeter", Greeter, "a@127.0.0.1")
    pid = a.network().get_node("b@127.0.0.1").spawn("greeter", "hello")
    assert pid.node == "b@127.0.0.1"
    assert a.call(pid, "world") == "hello, world"


class EnvReporter(act.Actor):
    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "crash":
            raise RuntimeError("asked to")
        return self.env.get(request)


def test_remote_spawn_honours_the_process_options(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.network().enable_spawn("reporter", EnvReporter)
    spawned: queue.Queue[Any] = queue.Queue()

    class Parent(act.Actor):
        def init(self) -> None:
            options = gen.ProcessOptions(link_parent=True, env={"region": "eu"})
            spawned.put(self.spawn_remote("b@127.0.0.1", "reporter", options=options))

        def handle_message(self, sender: gen.PID, message: Any) -> None:
            self.stop("done")

    parent = a.spawn(Parent)
    child = get(spawned)
    assert child.node == "b@127.0.0.1"
    assert a.call(child, "region") == "eu"
    a.send(parent, "stop")  # the child is linked to its parent across the network
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            a.call(child, "region", timeout=1)
        except (gen.ErrProcessUnknown, gen.ErrProcessTerminated):
            return
        time.sleep(0.05)
    pytest.fail("the linked child outlived its parent")


def test_a_node_level_remote_spawn_cannot_link_a_parent(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.network().enable_spawn("reporter", EnvReporter)
    remote = a.network().get_node("b@127.0.0.1")
    with pytest.raises(gen.ErrIncorrect):
        remote.spawn("reporter", options=gen.ProcessOptions(link_parent=True))


def test_remote_spawn_from_a_node_not_on_the_list_is_not_allowed(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    c = nodes.start("c@127.0.0.1")
    b.network().enable_spawn("greeter", Greeter, "a@127.0.0.1")
    with pytest.raises(gen.ErrNotAllowed):
        c.network().get_node("b@127.0.0.1").spawn("greeter", "hi")
    b.network().disable_spawn("greeter")
    with pytest.raises(gen.ErrNameUnknown):
        a.network().get_node("b@127.0.0.1").spawn("greeter", "hi")


def test_remote_spawn_reports_a_failing_init(nodes: Cluster) -> None:
    class Broken(act.Actor):
        def init(self) -> None:
            raise ValueError("cannot start")

    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    b.network().enable_spawn("broken", Broken)
    with pytest.raises(gen.ErgoError, match="cannot start"):
        a.network().get_node("b@127.0.0.1").spawn("broken")
    # b keeps serving, and a call to a missing remote name fails at once
    with pytest.raises(gen.ErrProcessUnknown):
        a.call(gen.ProcessID("missing", "b@127.0.0.1"), 1, timeout=20)


def test_handshakes_beyond_max_handshakes_are_refused_busy(nodes: Cluster) -> None:
    opts = nodes.node_options("b@127.0.0.1", tls=False)
    opts.network.acceptors[0].max_handshakes = 2
    opts.network.acceptors[0].handshake_timeout = 2.0
    b = nodes.start("b@127.0.0.1", opts)
    b.spawn_register("pong", SlowPong)
    port = opts.network.acceptors[0].port
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(2)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as third:
            third.settimeout(WAIT)
            data = b""
            while chunk := third.recv(1024):
                data += chunk
            assert b"busy" in data
    finally:
        for s in stalled:
            s.close()
    a = nodes.start("a@127.0.0.1", tls=False)
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 1) == ("pong", 1)


def test_stopping_a_node_fires_remote_links_and_monitors(nodes: Cluster) -> None:
    a = nodes.start("a@127.0.0.1")
    b = nodes.start("b@127.0.0.1")
    target = b.spawn(Recorder, queue.Queue())
    out: queue.Queue[Any] = queue.Queue()
    a.spawn(Watcher, target, out, "link", "monitor")
    assert _wait_for(lambda: a.network().nodes() == ["b@127.0.0.1"])
    time.sleep(0.2)  # the link and monitor requests cross first
    b.stop()
    got = [get(out), get(out)]
    kinds = sorted(type(m).__name__ for m in got)
    assert kinds == ["MessageDownPID", "MessageExitPID"]
    # b's processes end as b shuts down: the reason is their end, or the lost connection
    assert all(m.pid == target for m in got)


def test_a_node_cannot_pose_as_another_with_a_valid_cluster_certificate(nodes: Cluster) -> None:
    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    options = nodes.node_options("m@127.0.0.1")
    cam = gen.create_cert_auth_manager(nodes.ca.issue("c@127.0.0.1", hosts=("127.0.0.1",)))
    cam.set_root_cas(nodes.ca.pool())
    options.cert_manager = cam
    impostor = nodes.start("m@127.0.0.1", options)
    with pytest.raises(gen.ErrNoConnection, match="identity"):
        impostor.call(gen.ProcessID("pong", "b@127.0.0.1"), 1)
    assert b.network().nodes() == []


def test_a_dialer_refuses_a_server_whose_certificate_names_another_node(nodes: Cluster) -> None:
    options = nodes.node_options("b@127.0.0.1")
    cam = gen.create_cert_auth_manager(nodes.ca.issue("z@127.0.0.1", hosts=("127.0.0.1",)))
    cam.set_client_cas(nodes.ca.pool())
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    options.cert_manager = cam
    options.network.verify_node_identity = False  # b itself does not check its peers
    b = nodes.start("b@127.0.0.1", options)
    b.spawn_register("pong", SlowPong)
    a = nodes.start("a@127.0.0.1")
    with pytest.raises(gen.ErrNoConnection, match="identity"):
        a.call(gen.ProcessID("pong", "b@127.0.0.1"), 1)


def test_a_certificate_that_expired_while_running_is_refused(nodes: Cluster) -> None:
    from datetime import timedelta

    b = nodes.start("b@127.0.0.1")
    b.spawn_register("pong", SlowPong)
    options = nodes.node_options("s@127.0.0.1")
    short = nodes.ca.issue("s@127.0.0.1", hosts=("127.0.0.1",), valid_for=timedelta(seconds=2))
    cam = gen.create_cert_auth_manager(short)
    cam.set_root_cas(nodes.ca.pool())
    options.cert_manager = cam
    s = nodes.start("s@127.0.0.1", options)
    time.sleep(2.5)
    with pytest.raises(gen.ErrNoConnection):
        s.call(gen.ProcessID("pong", "b@127.0.0.1"), 1)


def test_a_client_without_a_certificate_is_refused_when_required(nodes: Cluster) -> None:
    import ssl

    opts = nodes.node_options("b@127.0.0.1")
    b = nodes.start("b@127.0.0.1", opts)
    b.spawn_register("pong", SlowPong)
    ctx = ssl.create_default_context(cadata=nodes.ca.pool().to_pem())
    ctx.check_hostname = False
    port = opts.network.acceptors[0].port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw,
        pytest.raises((ssl.SSLError, OSError)),
        ctx.wrap_socket(raw) as tls,
    ):
        # TLS 1.3 reports the missing certificate at the first read
        tls.sendall(b"\x57\x01\x00\x00\x00\x01\x90")
        if not tls.recv(1024):
            raise ConnectionResetError("closed without a word")
    a = nodes.start("a@127.0.0.1")
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 1) == ("pong", 1)


def test_a_plain_acceptor_can_sit_beside_a_tls_one(nodes: Cluster) -> None:
    opts = nodes.node_options("b@127.0.0.1")
    plain_port = free_port()
    opts.network.acceptors.append(gen.AcceptorOptions(host="127.0.0.1", port=plain_port, tls=False))
    opts.network.registrar_enabled = False
    b = nodes.start("b@127.0.0.1", opts)
    b.spawn_register("pong", SlowPong)
    plain_opts = nodes.node_options("p@127.0.0.1", tls=False)
    plain_opts.network.registrar_enabled = False
    p = nodes.start("p@127.0.0.1", plain_opts)
    p.network().add_route("b@.*", gen.NetworkRoute(host="127.0.0.1", port=plain_port, tls=False))
    assert p.call(gen.ProcessID("pong", "b@127.0.0.1"), 1) == ("pong", 1)
    assert b.network().info("p@127.0.0.1")["tls_version"] is None
    tls_opts = nodes.node_options("t@127.0.0.1")
    tls_opts.network.registrar_enabled = False
    t = nodes.start("t@127.0.0.1", tls_opts)
    tls_port = opts.network.acceptors[0].port
    t.network().add_route("b@.*", gen.NetworkRoute(host="127.0.0.1", port=tls_port))
    assert t.call(gen.ProcessID("pong", "b@127.0.0.1"), 2) == ("pong", 2)
    assert b.network().info("t@127.0.0.1")["identity_verified"] is True


def test_acceptors_report_the_ports_they_bound(nodes: Cluster) -> None:
    """Port 0 (or a range) binds whatever is free: acceptors() says which, and how."""
    opts = nodes.node_options("b@127.0.0.1")
    opts.network.acceptors = [
        gen.AcceptorOptions(host="127.0.0.1", port=0, max_handshakes=7),
        gen.AcceptorOptions(host="127.0.0.1", port=0, tls=False, max_message_size=4096),
    ]
    opts.network.registrar_enabled = False
    b = nodes.start("b@127.0.0.1", opts)
    b.spawn_register("pong", SlowPong)
    first, second = b.network().acceptors()
    assert first.port != 0 and second.port != 0 and first.port != second.port
    assert (first.tls, first.max_handshakes) == (True, 7)
    assert first.cert_version == nodes.managers["b@127.0.0.1"].version
    assert (second.tls, second.cert_version, second.max_message_size) == (False, None, 4096)
    nodes.rotate("b@127.0.0.1")
    assert b.network().acceptors()[0].cert_version == first.cert_version + 1
    a = nodes.start("a@127.0.0.1")
    a.network().add_route("b@.*", gen.NetworkRoute(host="127.0.0.1", port=first.port))
    assert a.call(gen.ProcessID("pong", "b@127.0.0.1"), 1) == ("pong", 1)
    hidden = nodes.node_options("h@127.0.0.1")
    hidden.network.mode = gen.NetworkMode.HIDDEN
    assert nodes.start("h@127.0.0.1", hidden).network().acceptors() == []
