"""The network seam: a fake backend records what goes out; tests drive what comes in."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Recorder, disabled_options, get, unique_node_name, wait_threads_gone

from ergo_py import act, gen
from ergo_py.node import start_node
from ergo_py.node.backend import DisabledNetwork

PEER = gen.Atom("peer@localhost")
REMOTE = gen.PID(PEER, 1000, 7)
_ref_ids = itertools.count(1)


def peer_ref() -> gen.Ref:
    """A fresh ref as the peer makes them (for its calls and monitors)."""
    return gen.Ref(PEER, next(_ref_ids), 7)


class FakeBackend(gen.NetworkBackend):
    """Records every outbound operation as (method, args) on a queue.

    ``router`` is the node's ``gen.NodeRouter``, as a network backend gets it:
    tests call it to play what arrives from the network.
    """

    router: gen.NodeRouter

    def __init__(self) -> None:
        self.out: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue()
        self.stopped = False
        self.ended: dict[str, gen.PID | None] = {}

    def _rec(self, method: str, *args: Any) -> None:
        self.out.put((method, args))

    def send(self, from_pid: gen.PID, to: gen.RemoteTarget, message: Any) -> None:
        self._rec("send", from_pid, to, message)

    def call(self, from_pid: gen.PID, to: gen.RemoteTarget, ref: gen.Ref, request: Any) -> None:
        self._rec("call", from_pid, to, ref, request)

    def reply(self, from_pid: gen.PID, to: gen.PID, ref: gen.Ref, value: Any, error: Any) -> None:
        self._rec("reply", from_pid, to, ref, value, error)

    def link(self, from_pid: gen.PID, target: gen.RemoteTarget) -> None:
        self._rec("link", from_pid, target)

    def unlink(self, from_pid: gen.PID, target: gen.RemoteTarget) -> None:
        self._rec("unlink", from_pid, target)

    def monitor(self, from_pid: gen.PID, target: gen.RemoteTarget, ref: gen.Ref) -> None:
        self._rec("monitor", from_pid, target, ref)

    def demonitor(self, from_pid: gen.PID, target: gen.RemoteTarget, ref: gen.Ref) -> None:
        self._rec("demonitor", from_pid, target, ref)

    def exit(
        self, from_target: gen.RemoteTarget, to: gen.PID, reason: Any, ended: gen.PID | None = None
    ) -> None:
        self.ended["exit"] = ended
        self._rec("exit", from_target, to, reason)

    def down(
        self,
        from_target: gen.RemoteTarget,
        to: gen.PID,
        ref: gen.Ref,
        reason: Any,
        ended: gen.PID | None = None,
    ) -> None:
        self.ended["down"] = ended
        self._rec("down", from_target, to, ref, reason)

    def spawn(
        self,
        from_pid: gen.PID,
        node: str,
        name: str,
        args: tuple[Any, ...],
        options: gen.ProcessOptions,
    ) -> gen.PID:
        self._rec("spawn", from_pid, node, name, args)
        return REMOTE

    def connect(self, node: str) -> None:
        self._rec("connect", node)

    def network(self) -> gen.Network:
        return DisabledNetwork()

    def stop(self) -> None:
        self.stopped = True

    def expect(self, method: str) -> tuple[Any, ...]:
        """The next recorded operation, which must be ``method``; returns its args."""
        got, args = self.out.get(timeout=5)
        assert got == method, (got, args)
        return args


Fake = tuple[gen.Node, gen.NodeRouter, FakeBackend]


@pytest.fixture
def fake() -> Iterator[Fake]:
    before = set(threading.enumerate())
    backend = FakeBackend()

    def factory(router: gen.NodeRouter, options: gen.NodeOptions) -> gen.NetworkBackend:
        backend.router = router
        return backend

    node = start_node(unique_node_name("router"), disabled_options(), backend_factory=factory)
    try:
        yield node, backend.router, backend
    finally:
        node.stop()
    assert backend.stopped
    assert wait_threads_gone(before) == []


class Agent(act.Actor):
    """Does what a call asks (on its own behalf) and reports every message it gets."""

    def init(self, out: queue.Queue[Any], trap_exit: bool = True) -> None:
        self.out = out
        self.trap_exit = trap_exit

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        op, *args = request
        try:
            if op == "call":
                return self.call(args[0], args[1], timeout=60)
            result = getattr(self, op)(*args)
        except gen.ErgoError as exc:
            return type(exc).__name__
        return result

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put((sender, message))

    def terminate(self, reason: Any) -> None:
        self.out.put(("terminate", reason))


def test_the_node_users_hold_offers_only_gen_node(fake: Fake) -> None:
    node, router, _ = fake
    public = {n for n in dir(node) if not n.startswith("_")}
    assert public <= {n for n in dir(gen.Node) if not n.startswith("_")}
    assert not hasattr(router, "send_from") and not hasattr(node, "route_send")


def test_send_to_remote_goes_through_the_backend(fake: Fake) -> None:
    node, _, backend = fake
    node.send(REMOTE, {"a": 1})
    assert backend.expect("send") == (node.pid, REMOTE, {"a": 1})


def test_message_from_remote_sender_is_delivered(fake: Fake) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    router.route_send(REMOTE, pid, "from afar")
    assert get(out) == (REMOTE, "from afar")


def test_a_burst_of_messages_arrives_in_order_per_recipient(
    fake: Fake,
) -> None:
    node, router, _ = fake
    out_a: queue.Queue[Any] = queue.Queue()
    out_b: queue.Queue[Any] = queue.Queue()
    a = node.spawn(Recorder, out_a)
    b = node.spawn(Recorder, out_b)
    other = gen.PID(PEER, 1001, 7)
    sends = [(REMOTE if i % 3 else other, a if i % 2 else b, i) for i in range(40)]
    assert router.route_sends(sends) == []
    assert [get(out_a) for _ in range(20)] == [(s, m) for s, to, m in sends if to == a]
    assert [get(out_b) for _ in range(20)] == [(s, m) for s, to, m in sends if to == b]


def test_a_burst_reports_the_messages_it_could_not_deliver(
    fake: Fake,
) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    gone = gen.PID(node.name, 999_999, node.creation)
    failed = router.route_sends([(REMOTE, pid, 1), (REMOTE, gone, 2), (REMOTE, pid, 3)])
    assert [(i, type(e)) for i, e in failed] == [(1, gen.ErrProcessUnknown)]
    assert [get(out), get(out)] == [(REMOTE, 1), (REMOTE, 3)]


def test_a_process_that_stops_mid_burst_gets_nothing_after(
    fake: Fake,
) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    router.route_sends([(REMOTE, pid, 1), (REMOTE, pid, "stop"), (REMOTE, pid, 2)])
    assert get(out) == (REMOTE, 1)
    assert get(out) == ("terminate", gen.TERMINATE_REASON_NORMAL)
    assert out.empty()


def test_an_exit_after_a_burst_comes_after_every_message_in_it(
    fake: Fake,
) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out, True)
    router.route_sends([(REMOTE, pid, i) for i in range(5)])
    router.route_exit(REMOTE, pid, "bye")
    assert [get(out) for _ in range(5)] == [(REMOTE, i) for i in range(5)]
    sender, message = get(out)
    assert sender == REMOTE and isinstance(message, gen.MessageExitPID)


def test_a_batch_is_delivered_in_order_behind_what_came_before_it(fake: Fake) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out, True)
    router.route_send(REMOTE, pid, "first")
    router.route_batch(gen.SendBatch(REMOTE, pid, list(range(20))))
    router.route_exit(REMOTE, pid, "bye")
    assert [get(out) for _ in range(21)] == [(REMOTE, m) for m in ["first", *range(20)]]
    sender, message = get(out)
    assert sender == REMOTE and isinstance(message, gen.MessageExitPID)


def test_a_batch_to_an_unknown_recipient_raises_and_delivers_nothing(fake: Fake) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    gone = gen.PID(node.name, 999_999, node.creation)
    with pytest.raises(gen.ErrProcessUnknown):
        router.route_batch(gen.SendBatch(REMOTE, gone, [1, 2]))
    with pytest.raises(gen.ErrProcessUnknown):
        router.route_batch(gen.SendBatch(REMOTE, gen.ProcessID("nobody", node.name), [3]))
    router.route_batch(gen.SendBatch(REMOTE, pid, [4]))
    assert get(out) == (REMOTE, 4)
    assert out.empty()


def test_a_process_that_stops_mid_batch_gets_nothing_after(fake: Fake) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    router.route_batch(gen.SendBatch(REMOTE, pid, [1, "stop", 2]))
    assert get(out) == (REMOTE, 1)
    assert get(out) == ("terminate", gen.TERMINATE_REASON_NORMAL)
    assert out.empty()


def test_a_process_that_crashes_mid_batch_gets_nothing_after(fake: Fake) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    router.route_batch(gen.SendBatch(REMOTE, pid, [1, "crash", 2]))
    assert get(out) == (REMOTE, 1)
    reason = get(out)
    assert reason[0] == "terminate" and isinstance(reason[1], RuntimeError)
    assert out.empty()


def test_remote_call_is_answered_by_route_reply(fake: Fake) -> None:
    node, router, backend = fake
    result: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=lambda: result.put(node.call(REMOTE, "q", timeout=30))).start()
    sender, to, ref, request = backend.expect("call")
    assert (sender, to, request) == (node.pid, REMOTE, "q")
    router.route_reply(REMOTE, ref, "answer", None)
    assert get(result) == "answer"


def test_remote_call_error_reply_is_raised(fake: Fake) -> None:
    node, router, backend = fake
    errors: queue.Queue[Any] = queue.Queue()

    def caller() -> None:
        try:
            node.call(REMOTE, "q", timeout=30)
        except gen.ErgoError as exc:
            errors.put(exc)

    threading.Thread(target=caller).start()
    ref = backend.expect("call")[2]
    router.route_reply(REMOTE, ref, None, gen.ErrNotAllowed("no"))
    assert isinstance(get(errors), gen.ErrNotAllowed)


def test_connection_lost_fails_pending_call_at_once(fake: Fake) -> None:
    node, router, backend = fake
    errors: queue.Queue[Any] = queue.Queue()

    def caller() -> None:
        try:
            node.call(REMOTE, "q", timeout=60)
        except gen.ErgoError as exc:
            errors.put(exc)

    threading.Thread(target=caller).start()
    backend.expect("call")
    router.route_node_down(PEER)
    assert isinstance(get(errors), gen.ErrNoConnection)


def test_late_remote_reply_after_timeout_is_dropped(fake: Fake) -> None:
    node, router, backend = fake
    with pytest.raises(gen.ErrTimeout):
        node.call(REMOTE, "q", timeout=0.05)
    ref = backend.expect("call")[2]
    router.route_reply(REMOTE, ref, "too late", None)
    result: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=lambda: result.put(node.call(REMOTE, "q2", timeout=30))).start()
    ref2 = backend.expect("call")[2]
    assert ref2 != ref
    router.route_reply(REMOTE, ref2, "fresh", None)
    assert get(result) == "fresh"


def test_remote_call_to_local_process_is_answered_via_backend(
    fake: Fake,
) -> None:
    node, router, backend = fake
    pid = node.spawn(Recorder, queue.Queue())
    ref = peer_ref()
    router.route_call(REMOTE, pid, ref, "ping")
    assert backend.expect("reply") == (pid, REMOTE, ref, ("ok", "ping"), None)


def test_remote_call_to_missing_process_gets_process_unknown(
    fake: Fake,
) -> None:
    node, router, backend = fake
    ref = peer_ref()
    router.route_call(REMOTE, "nobody", ref, "ping")  # type: ignore[arg-type]
    ref = peer_ref()
    router.route_call(REMOTE, gen.ProcessID("nobody", node.name), ref, "ping")
    backend.expect("reply")
    _, to, got_ref, value, error = backend.expect("reply")
    assert (to, got_ref, value) == (REMOTE, ref, None)
    assert isinstance(error, gen.ErrProcessUnknown)


def test_remote_caller_is_told_when_the_callee_crashes(fake: Fake) -> None:
    node, router, backend = fake

    class Crash(act.Actor):
        def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
            raise RuntimeError("no")

    pid = node.spawn(Crash)
    ref = peer_ref()
    router.route_call(REMOTE, pid, ref, "x")
    _, to, got_ref, value, error = backend.expect("reply")
    assert (to, got_ref, value) == (REMOTE, ref, None)
    assert isinstance(error, gen.ErrProcessTerminated)


def test_remote_linker_gets_exit_through_backend(fake: Fake) -> None:
    node, router, backend = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    router.route_link(REMOTE, pid)
    ref = peer_ref()
    router.route_monitor(REMOTE, pid, ref)
    node.send(pid, "stop")
    outbound = {backend.out.get(timeout=5)[0]: None for _ in range(2)}
    assert set(outbound) == {"exit", "down"}


def test_signals_for_a_name_say_which_process_ended(fake: Fake) -> None:
    """So the network can queue them behind that process's messages."""
    node, router, backend = fake
    pid = node.spawn_register("named", Recorder, queue.Queue())
    name = gen.ProcessID("named", node.name)
    router.route_link(REMOTE, name)
    router.route_monitor(REMOTE, name, peer_ref())
    node.send(pid, "stop")
    assert backend.expect("exit")[0] == name
    assert backend.expect("down")[0] == name
    assert backend.ended == {"exit": pid, "down": pid}


def test_remote_link_on_missing_process_is_answered_with_exit(
    fake: Fake,
) -> None:
    node, router, backend = fake
    ghost = gen.PID(node.name, 99_999, node.creation)
    router.route_link(REMOTE, ghost)
    from_target, to, reason = backend.expect("exit")
    assert (from_target, to) == (ghost, REMOTE)
    assert isinstance(reason, gen.ErrProcessUnknown)
    ref = peer_ref()
    router.route_monitor(REMOTE, ghost, ref)
    assert backend.expect("down")[2] == ref


def test_remote_unlink_stops_the_exit(fake: Fake) -> None:
    node, router, backend = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    router.route_link(REMOTE, pid)
    router.route_unlink(REMOTE, pid)
    ref = peer_ref()
    router.route_monitor(REMOTE, pid, ref)
    router.route_demonitor(REMOTE, pid, ref)
    node.send(pid, "stop")
    assert get(out)[0] == "terminate"
    assert backend.out.empty()


def test_remote_process_ended_gives_local_linker_an_exit(fake: Fake) -> None:
    node, router, backend = fake
    out: queue.Queue[Any] = queue.Queue()
    agent = node.spawn(Agent, out)
    node.call(agent, ("link", REMOTE))
    assert backend.expect("link") == (agent, REMOTE)
    router.route_exit(REMOTE, agent, gen.TERMINATE_REASON_NORMAL)  # what its node sends
    assert get(out) == (REMOTE, gen.MessageExitPID(REMOTE, gen.TERMINATE_REASON_NORMAL))


def test_remote_exit_ends_a_non_trapping_linker(fake: Fake) -> None:
    node, router, backend = fake
    out: queue.Queue[Any] = queue.Queue()
    agent = node.spawn(Agent, out, False)
    node.call(agent, ("link", REMOTE))
    backend.expect("link")
    router.route_exit(REMOTE, agent, gen.TERMINATE_REASON_SHUTDOWN)
    assert get(out) == ("terminate", gen.TERMINATE_REASON_SHUTDOWN)


def test_remote_down_reaches_the_monitor(fake: Fake) -> None:
    node, router, backend = fake
    out: queue.Queue[Any] = queue.Queue()
    agent = node.spawn(Agent, out)
    ref = node.call(agent, ("monitor", REMOTE))
    assert backend.expect("monitor") == (agent, REMOTE, ref)
    router.route_down(REMOTE, agent, ref, gen.TERMINATE_REASON_NORMAL)
    assert get(out) == (REMOTE, gen.MessageDownPID(REMOTE, ref, gen.TERMINATE_REASON_NORMAL))


def test_connection_lost_fires_links_and_monitors_with_no_connection(
    fake: Fake,
) -> None:
    node, router, _ = fake
    out: queue.Queue[Any] = queue.Queue()
    agent = node.spawn(Agent, out)
    name_target = gen.ProcessID("svc", PEER)
    node.call(agent, ("link", REMOTE))
    mref = node.call(agent, ("monitor", name_target))
    node.call(agent, ("link_node", PEER))
    nref = node.call(agent, ("monitor_node", PEER))
    router.route_node_down(PEER)
    got = {type(m): m for _, m in (get(out) for _ in range(4))}
    assert isinstance(got[gen.MessageExitPID].reason, gen.ErrNoConnection)
    down = got[gen.MessageDownProcessID]
    assert (down.process_id, down.ref) == (name_target, mref)
    assert isinstance(down.reason, gen.ErrNoConnection)
    assert got[gen.MessageExitNode] == gen.MessageExitNode(PEER)
    assert got[gen.MessageDownNode] == gen.MessageDownNode(PEER, nref)


def test_connection_lost_fails_a_pending_call_from_an_actor(
    fake: Fake,
) -> None:
    node, router, backend = fake
    agent = node.spawn(Agent, queue.Queue())
    result: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=lambda: result.put(node.call(agent, ("call", REMOTE, "q")))).start()
    backend.expect("call")
    router.route_node_down(PEER)
    assert get(result) == "ErrNoConnection"


def test_connection_lost_drops_remote_links_on_local_processes(
    fake: Fake,
) -> None:
    node, router, backend = fake
    out: queue.Queue[Any] = queue.Queue()
    pid = node.spawn(Recorder, out)
    router.route_link(REMOTE, pid)
    router.route_node_down(PEER)
    node.send(pid, "stop")
    assert get(out)[0] == "terminate"
    assert backend.out.empty()


def test_local_process_ending_unlinks_its_remote_links(fake: Fake) -> None:
    node, _, backend = fake
    out: queue.Queue[Any] = queue.Queue()
    agent = node.spawn(Agent, out)
    node.call(agent, ("link", REMOTE))
    backend.expect("link")
    node.send_exit(agent, gen.TERMINATE_REASON_KILL)
    assert backend.expect("unlink") == (agent, REMOTE)


def test_remote_exit_signal_and_node_link_go_through_backend(
    fake: Fake,
) -> None:
    node, _, backend = fake
    node.send_exit(REMOTE, gen.TERMINATE_REASON_SHUTDOWN)
    assert backend.expect("exit") == (node.pid, REMOTE, gen.TERMINATE_REASON_SHUTDOWN)
    agent = node.spawn(Agent, queue.Queue())
    node.call(agent, ("link_node", PEER))
    assert backend.expect("connect") == (PEER,)


def test_disabled_backend_refuses_remote_link_and_monitor(node: gen.Node) -> None:
    out: queue.Queue[Any] = queue.Queue()
    agent = node.spawn(Agent, out)
    assert node.call(agent, ("link", REMOTE)) == "ErrNoConnection"
    assert node.call(agent, ("monitor", REMOTE)) == "ErrNoConnection"
    assert node.call(agent, ("link_node", PEER)) == "ErrNoConnection"
    assert node.call(agent, ("call", REMOTE, "x")) == "ErrNoConnection"


def test_a_reply_that_arrives_before_the_caller_waits_is_kept() -> None:
    from ergo_py.node.calls import CallTable

    table = CallTable()
    ref = gen.Ref("a@localhost", 1, 1)
    slot = table.register(ref, gen.Atom("b@localhost"))
    assert table.resolve(ref, "early", None)
    assert table.wait(ref, slot, 0.1) == "early"


def test_a_reply_naming_another_incarnations_ref_does_not_answer_a_call() -> None:
    """The call table goes by the ref's id; node and creation must match too."""
    from ergo_py.node.calls import CallTable

    table = CallTable()
    ref = gen.Ref("a@localhost", 7, 1)
    slot = table.register(ref, gen.Atom("b@localhost"))
    assert not table.resolve(gen.Ref("a@localhost", 7, 2), "forged", None)
    assert not table.resolve(gen.Ref("z@localhost", 7, 1), "forged", None)
    assert table.resolve(gen.Ref("a@localhost", 7, 1), "real", None)
    assert table.wait(ref, slot, 0.1) == "real"
    assert not table.resolve(ref, "late", None)  # answered once only
