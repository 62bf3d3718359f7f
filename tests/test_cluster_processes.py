"""Cluster nodes in child processes, mixed with nodes in the test's process.

The actors below (and ``ergo_py.testing.Echo``: a call answered with the
request, ``"stop"`` ends it) are module-level so the children can import them
by name.
One cluster (an in-process node and two process nodes) is shared by the
module; tests that kill or stop a node start a node of their own in it.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ergo_py import act, gen
from ergo_py.testing import Cluster, Echo, ErrNodeProcessExited, ProcessNode, RemoteError

WAIT = 10.0  # seconds any single expected event may take (children share 2 cores)

LOCAL = "local@127.0.0.1"
PA = "pa@127.0.0.1"
PB = "pb@127.0.0.1"

_seq = itertools.count()


class Sleeper(act.Actor):
    """Answers a call after sleeping ``request`` seconds."""

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        time.sleep(float(request))
        return request


class Watcher(act.Actor):
    """Links, monitors or calls what a call tells it to; reports what it received.

    Traps exits, so a linked process ending arrives as a message.
    """

    trap_exit = True

    def init(self) -> None:
        self.received: list[Any] = []

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.received.append(message)

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        match request:
            case ("link", target):
                self.link(target)
                return None
            case ("monitor", target):
                return self.monitor(target)
            case ("call", target, inner):
                return self.call(target, inner)
            case ("send", target, message):
                # After a link/monitor from here: signals between a pair keep
                # their order, so the target sees the link before this.
                self.send(target, message)
                return None
            case "received":
                return list(self.received)
        raise ValueError(f"unknown request {request!r}")


class Failing(act.Actor):
    """``init`` raises a plain ValueError."""

    def init(self) -> None:
        raise ValueError("init refused")


def received(node: gen.Node, watcher: gen.PID, count: int = 1) -> list[Any]:
    """What ``watcher`` received once it holds ``count`` messages (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        got: list[Any] = node.call(watcher, "received")
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_seq)}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """``local`` in this process, ``pa`` and ``pb`` in processes of their own."""
    with Cluster(names=[PA, PB], processes=True) as c:
        c.start(LOCAL, process=False)
        yield c
        children = [n.process for n in c.nodes.values() if isinstance(n, ProcessNode)]
    for child in children:
        assert child.exitcode is not None and child.pid is not None  # ended: no orphan
        with pytest.raises(ChildProcessError):  # and reaped: no zombie
            os.waitpid(child.pid, os.WNOHANG)


def test_process_nodes_are_process_node_handles_in_other_os_processes(cluster: Cluster) -> None:
    pa = cluster[PA]
    assert isinstance(pa, ProcessNode)
    assert pa.name == PA and pa.pid.node == PA
    assert pa.process.pid not in (None, os.getpid())
    assert pa.is_alive()
    assert not isinstance(cluster[LOCAL], ProcessNode)


def test_call_from_in_process_node_to_process_node(cluster: Cluster) -> None:
    name = unique("echo")
    cluster[PA].spawn_register(name, Echo)
    assert cluster[LOCAL].call(gen.ProcessID(name, PA), ("hi", 1)) == ("hi", 1)


def test_send_from_process_node_to_in_process_node(cluster: Cluster) -> None:
    watcher = cluster[LOCAL].spawn(Watcher)
    cluster[PA].send(watcher, "hello")
    assert received(cluster[LOCAL], watcher) == ["hello"]


def test_call_between_two_process_nodes(cluster: Cluster) -> None:
    name = unique("echo")
    cluster[PB].spawn_register(name, Echo)
    watcher = cluster[PA].spawn(Watcher)
    assert cluster[PA].call(watcher, ("call", gen.ProcessID(name, PB), 42)) == 42


def test_link_from_process_node_fires_when_in_process_target_ends(cluster: Cluster) -> None:
    target = cluster[LOCAL].spawn(Echo)
    watcher = cluster[PA].spawn(Watcher)
    cluster[PA].call(watcher, ("link", target))
    cluster[PA].call(watcher, ("send", target, "stop"))
    [exit_message] = received(cluster[PA], watcher)
    assert exit_message == gen.MessageExitPID(target, gen.TERMINATE_REASON_NORMAL)


def test_monitor_between_two_process_nodes_fires_on_normal_end(cluster: Cluster) -> None:
    target = cluster[PB].spawn(Echo)
    watcher = cluster[PA].spawn(Watcher)
    ref = cluster[PA].call(watcher, ("monitor", target))
    cluster[PA].call(watcher, ("send", target, "stop"))
    [down] = received(cluster[PA], watcher)
    assert down == gen.MessageDownPID(target, ref, gen.TERMINATE_REASON_NORMAL)


def test_kill_fires_monitors_with_no_connection_and_fails_pending_calls(
    cluster: Cluster,
) -> None:
    victim = unique("victim") + "@127.0.0.1"
    cluster.start(victim, process=True)
    cluster[victim].spawn_register("sleeper", Sleeper)
    sleeper = gen.ProcessID("sleeper", victim)
    watcher = cluster[LOCAL].spawn(Watcher)
    cluster[LOCAL].call(watcher, ("monitor", sleeper))
    outcome: queue.Queue[BaseException | Any] = queue.Queue()

    def pending_call() -> None:
        try:
            outcome.put(cluster[LOCAL].call(sleeper, 60, timeout=60))
        except BaseException as exc:
            outcome.put(exc)

    caller = threading.Thread(target=pending_call, daemon=True)
    caller.start()
    time.sleep(0.2)  # let the call reach the sleeper (if not, it fails the same way)
    cluster.kill(victim)

    assert isinstance(outcome.get(timeout=WAIT), gen.ErrNoConnection)
    caller.join(WAIT)
    [down] = received(cluster[LOCAL], watcher)
    assert isinstance(down, gen.MessageDownProcessID)
    assert down.process_id == sleeper
    assert isinstance(down.reason, gen.ErrNoConnection)
    assert victim not in cluster.nodes


def test_every_gen_network_member_runs_in_the_child(cluster: Cluster) -> None:
    [acceptor] = cluster[PA].network().acceptors()  # not gen.Network's default, []
    assert acceptor.port == cluster.options[PA].network.acceptors[0].port
    assert acceptor.tls and acceptor.cert_version is not None


def test_rotate_process_node_new_connections_present_new_certificate(
    cluster: Cluster,
) -> None:
    cluster.wait_connected(LOCAL, PB)
    cert = cluster.rotate(PB)
    cluster.disconnect(LOCAL, PB)
    cluster.wait_connected(LOCAL, PB)
    assert cluster[LOCAL].network().info(PB)["peer_cert_fingerprint"] == cert.fingerprint
    assert cluster[PB].network().info(LOCAL)["local_cert_fingerprint"] == cert.fingerprint


def test_rotate_process_node_with_reconnect_moves_connections_at_once(
    cluster: Cluster,
) -> None:
    cluster.wait_connected(PA, PB)
    cert = cluster.rotate(PA, reconnect=True)
    info = cluster[PB].network().info(PA)
    assert info["peer_cert_fingerprint"] == cert.fingerprint
    assert info["identity_verified"] is True


def test_a_direct_cert_manager_update_reaches_the_child(cluster: Cluster) -> None:
    cluster.wait_connected(PB, LOCAL)
    cert = cluster.ca.issue(PB, hosts=("127.0.0.1",))
    cluster.managers[PB].update(cert)  # the parent-side manager: mirrored into the child
    cluster.reconnect(PB, LOCAL)
    assert cluster[PB].network().info(LOCAL)["local_cert_fingerprint"] == cert.fingerprint


def test_rotate_ca_moves_in_process_and_process_nodes_to_the_new_ca(cluster: Cluster) -> None:
    cluster.wait_connected(LOCAL, PA)
    cluster.wait_connected(PA, PB)
    new_ca = cluster.rotate_ca()
    for a, b in ((LOCAL, PA), (PA, PB), (PB, LOCAL)):
        cluster.wait_connected(a, b)
        peer_cert = cluster.managers[b].get_certificate()
        assert peer_cert.leaf.issuer == new_ca.certificate.subject
        assert cluster[a].network().info(b)["peer_cert_fingerprint"] == peer_cert.fingerprint


def test_errors_from_the_child_keep_their_gen_class(cluster: Cluster) -> None:
    with pytest.raises(gen.ErrProcessUnknown):
        cluster[PA].call("nobody-is-registered-here", 1)
    sleeper = cluster[PA].spawn(Sleeper)
    with pytest.raises(gen.ErrTimeout):
        cluster[PA].call(sleeper, 1.0, timeout=0.1)
    with pytest.raises(gen.ErrNoConnection):
        cluster[PA].network().info("nobody@127.0.0.1")


def test_other_errors_from_the_child_carry_remote_type_and_text(cluster: Cluster) -> None:
    with pytest.raises(RemoteError) as info:
        cluster[PA].spawn(Failing)
    assert isinstance(info.value, gen.ErgoError)
    assert info.value.remote_type == "builtins.ValueError"
    assert info.value.remote_message == "init refused"
    assert "init refused" in info.value.remote_traceback


def test_a_value_that_cannot_be_pickled_raises_unsupported_type(cluster: Cluster) -> None:
    with pytest.raises(gen.ErrUnsupportedType):
        cluster[PA].send(cluster[PA].pid, lambda: None)


def test_a_child_that_died_makes_every_call_fail_at_once(cluster: Cluster) -> None:
    name = unique("doomed") + "@127.0.0.1"
    node = cluster.start(name, process=True)
    assert isinstance(node, ProcessNode)
    sleeper = node.spawn(Sleeper)
    outcome: queue.Queue[BaseException | Any] = queue.Queue()

    def pending_call() -> None:
        try:
            outcome.put(node.call(sleeper, 60, timeout=60))
        except BaseException as exc:
            outcome.put(exc)

    threading.Thread(target=pending_call, daemon=True).start()
    time.sleep(0.2)
    assert node.process.pid is not None
    os.kill(node.process.pid, signal.SIGKILL)  # from outside: the harness was not told

    pending = outcome.get(timeout=WAIT)
    assert isinstance(pending, ErrNodeProcessExited)
    assert isinstance(pending, gen.ErrNodeTerminated)
    with pytest.raises(ErrNodeProcessExited) as later:
        node.send(sleeper, "hi")
    assert later.value.exitcode == -signal.SIGKILL
    assert not node.is_alive()
    cluster.stop(name)  # returns at once for a dead child


def test_a_stopped_process_node_can_be_started_again(cluster: Cluster) -> None:
    name = unique("again") + "@127.0.0.1"
    cluster.start(name, process=True).spawn_register("echo", Echo)
    assert cluster[LOCAL].call(gen.ProcessID("echo", name), 1) == 1
    first = cluster[name]
    assert isinstance(first, ProcessNode)
    cluster.stop(name)
    assert first.process.exitcode == 0
    with pytest.raises(gen.ErrNoConnection):
        cluster[LOCAL].call(gen.ProcessID("echo", name), 2)
    cluster.start(name, process=True).spawn_register("echo", Echo)
    assert cluster[LOCAL].call(gen.ProcessID("echo", name), 3) == 3
    cluster.stop(name)


def test_kill_refuses_a_node_in_this_process(cluster: Cluster) -> None:
    with pytest.raises(gen.ErrUnsupported):
        cluster.kill(LOCAL)


def test_stop_kills_a_child_that_does_not_stop_in_time() -> None:
    options = gen.NodeOptions()
    options.network.mode = gen.NetworkMode.DISABLED
    node = ProcessNode(unique("frozen") + "@localhost", options, stop_timeout=0.5)
    assert node.process.pid is not None
    os.kill(node.process.pid, signal.SIGSTOP)  # alive, but deaf
    node.stop()
    assert node.process.exitcode == -signal.SIGKILL
    with pytest.raises(ErrNodeProcessExited):
        node.where_is("anything")


def test_per_acceptor_cert_managers_are_refused_for_process_nodes() -> None:
    options = gen.NodeOptions()
    cluster_options = Cluster(start=False).node_options("x@127.0.0.1")
    assert cluster_options.cert_manager is not None
    options.network.acceptors = [gen.AcceptorOptions(cert_manager=cluster_options.cert_manager)]
    with pytest.raises(gen.ErrUnsupported):
        ProcessNode("x@127.0.0.1", options)
