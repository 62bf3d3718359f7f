"""Exit signals and aliases between a Python node and the Go peer."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
from interop_pair import (  # noqa: F401  (fixtures, by their names)
    GO,
    PY,
    WAIT,
    Pair,
    SenderSink,
    binary_fixture,
    ergo_acceptor_fixture,
    go_args_fixture,
    pair_fixture,
)

from ergo_py import act, gen
from ergo_py.net.ergo import edf

pytestmark = pytest.mark.timeout(300)


class Trapper(act.Actor):
    """Traps exits and reports them; on request sends an exit signal or makes an alias."""

    def init(self, out: queue.Queue[Any]) -> None:
        self.out = out
        self.trap_exit = True

    def handle_message(self, sender: gen.PID, message: Any) -> None:
        self.out.put((sender, message))

    def handle_call(self, sender: gen.PID, ref: gen.Ref, request: Any) -> Any:
        if request == "alias":
            return self.create_alias()
        if isinstance(request, tuple) and request[0] == "exit":
            self.send_exit(request[1], request[2])
            return self.pid
        return request


def go_pid(answer: str) -> gen.PID:
    _, ident, creation = answer.split()[:3]
    return gen.PID(GO, int(ident), int(creation))


def test_go_sends_an_exit_signal_to_python_processes(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    pair.go_routes_to_python()
    out: queue.Queue[Any] = queue.Queue()
    trapper = node.spawn(Trapper, out)
    answer = peer.command(f"exit {PY} {trapper.id} {trapper.creation} shutdown")
    assert answer.startswith("ok exit from ")
    _, message = out.get(timeout=WAIT)
    assert isinstance(message, gen.MessageExitPID)
    assert message.pid.node == GO and message.pid.id == int(answer.split()[-1])
    assert message.reason == gen.Atom("shutdown")
    # A process that does not trap exits ends with the reason.
    victim = node.spawn(SenderSink, queue.Queue())
    assert node.call(victim, "alive") == "alive"
    answer = peer.command(f"exit {PY} {victim.id} {victim.creation} go says stop")
    assert answer.startswith("ok ")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            node.call(victim, "alive", timeout=1.0)
        except gen.ErrProcessUnknown:
            break
        except gen.ErrProcessTerminated as ended:  # the exit landed while this call waited
            assert "go says stop" in str(ended)
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the Python process survived an exit signal from Go")


def test_python_sends_an_exit_signal_to_a_go_process(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    target = go_pid(peer.command("trap gtrap"))
    sender = node.spawn(Trapper, queue.Queue())
    assert node.call(sender, ("exit", target, RuntimeError("python says stop"))) == sender
    event = peer.event()  # Go prints a PID as <crc32(node).id-high.id-low>
    assert event.startswith("exit <") and event.endswith(f".{sender.id}> python says stop")
    node.call(sender, ("exit", target, gen.Atom("shutdown")))
    assert peer.event().endswith(" shutdown")


def test_aliases_both_ways(pair: Pair) -> None:
    node, peer = pair.node, pair.peer
    pair.go_routes_to_python()
    # Go calls and sends to an alias of a Python process.
    out: queue.Queue[Any] = queue.Queue()
    owner = node.spawn(Trapper, out)
    alias = node.call(owner, "alias")
    words = " ".join(str(w) for w in edf.ref_words(alias.id))
    where = f"{PY} {words} {alias.creation}"
    assert peer.command(f"callalias {where} via alias") == "ok string via alias"
    assert peer.command(f"sendalias {where} hello alias") == "ok sent"
    sender, message = out.get(timeout=WAIT)
    assert sender.node == GO and message == "hello alias"
    # Python calls and sends to an alias of a Go process.
    _, w0, w1, w2, creation = peer.command("alias").split()
    go_alias = gen.Alias(GO, edf.words_ref(int(w0), int(w1), int(w2)), int(creation))
    assert node.call(go_alias, "to a go alias") == "to a go alias"
    node.send(go_alias, "sent to a go alias")
    event = peer.event()
    assert event.startswith("driver ") and event.endswith("string sent to a go alias")
