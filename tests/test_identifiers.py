"""Identifiers are immutable, hashable, ordered values."""

from __future__ import annotations

import pickle

import pytest

from ergo_py import gen


def test_pid_equality_and_hash_follow_fields() -> None:
    a = gen.PID("a@h", 1, 5)
    assert a == gen.PID("a@h", 1, 5)
    assert a != gen.PID("a@h", 1, 6)
    assert len({a, gen.PID("a@h", 1, 5)}) == 1


def test_pids_are_ordered() -> None:
    assert sorted([gen.PID("a@h", 2, 1), gen.PID("a@h", 1, 1)])[0].id == 1


def test_identifiers_are_immutable() -> None:
    pid = gen.PID("a@h", 1, 5)
    with pytest.raises(AttributeError):
        pid.id = 2  # type: ignore[misc]


def test_different_identifier_kinds_never_compare_equal() -> None:
    assert gen.PID("a@h", 1, 1) != gen.Ref("a@h", 1, 1)
    assert gen.ProcessID("x", "a@h") != "x"


def test_atom_is_a_str_with_a_host() -> None:
    atom = gen.Atom("node@example.com")
    assert atom == "node@example.com"
    assert atom.host == "example.com"
    assert gen.Atom("plain").host == ""


def test_identifiers_pickle() -> None:
    for value in (gen.PID("a@h", 1, 5), gen.ProcessID("n", "a@h"), gen.Alias("a@h", 9, 1)):
        assert pickle.loads(pickle.dumps(value)) == value


def test_a_ref_built_from_trusted_parts_is_the_same_ref() -> None:
    """identifiers.make_ref skips Ref()'s conversions; equality and hash must not differ."""
    from ergo_py.gen.identifiers import make_ref

    fast = make_ref(gen.Atom("a@localhost"), 2**90 + 7, 3)
    ref = gen.Ref("a@localhost", 2**90 + 7, 3)
    assert fast == ref and hash(fast) == hash(ref)
    assert {ref: 1}[fast] == 1
    assert type(fast) is gen.Ref and type(fast.node) is gen.Atom
    assert fast != gen.Alias("a@localhost", 2**90 + 7, 3)
