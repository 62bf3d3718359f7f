"""The pending-call table as a state machine: only the called node can answer a call."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from ergo_py import gen
from ergo_py.node.calls import CallTable, Reply

NODES = [gen.Atom(n) for n in ("b@h", "c@h", "m@h")]
HOME = gen.Atom("a@h")


class CallTableMachine(RuleBasedStateMachine):
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.table = CallTable()
        self.next_id = 1
        self.pending: dict[int, tuple[gen.Ref, gen.Atom | None, Any]] = {}
        self.answers: dict[int, Any] = {}  # what each call was answered with, and by whom

    @rule(target=calls, callee=st.sampled_from([*NODES, None]))
    def register(self, callee: gen.Atom | None) -> gen.Ref:
        ref = gen.Ref(HOME, self.next_id, 1)
        self.next_id += 1
        slot = self.table.register(ref, callee)
        self.pending[ref.id] = (ref, callee, slot)
        return ref

    @rule(ref=calls, sender=st.sampled_from(NODES), value=st.integers())
    def remote_reply(self, ref: gen.Ref, sender: gen.Atom, value: int) -> None:
        entry = self.pending.get(ref.id)
        fate = self.table.resolve_remote(ref, sender, (sender, value), None)
        if entry is None:
            assert fate is Reply.NOT_AWAITED
        elif entry[1] == sender:
            assert fate is Reply.TAKEN
            self.answers[ref.id] = (entry[1], (sender, value))
            del self.pending[ref.id]
        else:
            assert fate is Reply.MISDIRECTED

    @rule(ref=calls, creation=st.integers(2, 3), sender=st.sampled_from(NODES))
    def reply_for_another_incarnation(self, ref: gen.Ref, creation: int, sender: gen.Atom) -> None:
        other = gen.Ref(ref.node, ref.id, creation)
        assert self.table.resolve_remote(other, sender, "stale", None) is not Reply.TAKEN

    @rule(ref=calls)
    def give_up(self, ref: gen.Ref) -> None:
        if self.pending.pop(ref.id, None) is not None:
            self.table.cancel(ref)

    @rule(node=st.sampled_from(NODES))
    def node_down(self, node: gen.Atom) -> None:
        failed = self.table.fail_node(node, gen.ErrNoConnection("down"))
        gone = [rid for rid, (_, callee, _) in self.pending.items() if callee == node]
        assert failed == len(gone)
        for rid in gone:
            del self.pending[rid]

    @invariant()
    def answers_came_from_the_callee(self) -> None:
        for callee, (sender, _) in self.answers.values():
            assert callee == sender

    @invariant()
    def every_pending_call_is_still_in_the_table(self) -> None:
        assert len(self.table) == len(self.pending)


CallTableMachine.TestCase.settings = settings(max_examples=150, deadline=None)
test_only_the_called_node_answers_a_call = CallTableMachine.TestCase
