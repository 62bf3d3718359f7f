"""Node names, creation stamps, and starting nodes."""

from __future__ import annotations

import pytest
from conftest import disabled_options, unique_node_name

import ergo_py
from ergo_py import gen
from ergo_py.node import DisabledBackend, start_node
from ergo_py.node.backend import default_backend
from ergo_py.node.names import next_creation, validate_node_name

BAD_NAMES = [
    "nohost",
    "a@b@c",
    "@localhost",
    "node@",
    "@",
    "",
    "no de@localhost",
    "no\nde@localhost",
    "no\tde@localhost",
    "no\u00a0de@localhost",
    "no\u200bde@localhost",
    "no\x01de@localhost",
    "a:b@localhost",
    "a/b@localhost",
    "a?b@localhost",
    "a#b@localhost",
    "a%b@localhost",
    "n" * 250 + "@localhost",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_node_name_raises_node_error(name: str) -> None:
    with pytest.raises(gen.NodeError):
        ergo_py.start_node(name, disabled_options())


def test_node_name_error_says_what_is_wrong() -> None:
    with pytest.raises(gen.NodeError, match="exactly one '@'"):
        validate_node_name("a@b@c")
    with pytest.raises(gen.NodeError, match="empty host"):
        validate_node_name("a@")
    with pytest.raises(gen.NodeError, match="255 bytes"):
        validate_node_name("节" * 90 + "@h")


def test_non_str_node_name_raises_node_error() -> None:
    with pytest.raises(gen.NodeError):
        ergo_py.start_node(42, disabled_options())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["节点@localhost", "node_1.a@127.0.0.1", "a@b", "node@host:1234", "node@[::1]"]
)
def test_good_node_names_are_accepted(name: str) -> None:
    assert validate_node_name(name) == name
    assert isinstance(validate_node_name(name), gen.Atom)


def test_creation_stamps_strictly_increase() -> None:
    stamps = [next_creation() for _ in range(50)]
    assert stamps == sorted(set(stamps))


def test_same_name_restarted_gets_a_new_creation() -> None:
    name = unique_node_name()
    first = ergo_py.start_node(name, disabled_options())
    first.stop()
    second = ergo_py.start_node(name, disabled_options())
    second.stop()
    assert second.creation > first.creation


def test_second_live_node_with_the_same_name_is_refused() -> None:
    name = unique_node_name()
    with (
        ergo_py.start_node(name, disabled_options()),
        pytest.raises(gen.NodeError, match="already running"),
    ):
        ergo_py.start_node(name, disabled_options())


def test_options_of_the_wrong_type_raise_node_error() -> None:
    with pytest.raises(gen.NodeError):
        ergo_py.start_node(unique_node_name(), options={"x": 1})  # type: ignore[arg-type]


def test_node_exposes_name_pid_and_creation() -> None:
    name = unique_node_name()
    with ergo_py.start_node(name, disabled_options()) as node:
        assert node.name == name
        assert node.pid.node == name
        assert node.pid.creation == node.creation


def test_disabled_mode_uses_the_disabled_backend() -> None:
    seen = []

    def factory(router: gen.NodeRouter, options: gen.NodeOptions) -> gen.NetworkBackend:
        backend = default_backend(router, options)
        seen.append(backend)
        return backend

    node = start_node(unique_node_name(), disabled_options(), backend_factory=factory)
    node.stop()
    assert isinstance(seen[0], DisabledBackend)


def test_disabled_network_refuses_remote_nodes(node: gen.Node) -> None:
    assert node.network().nodes() == []
    with pytest.raises(gen.ErrNoConnection):
        node.network().get_node("b@localhost")


def test_a_failing_backend_factory_releases_the_name() -> None:
    name = unique_node_name()

    def broken(router: gen.NodeRouter, options: gen.NodeOptions) -> gen.NetworkBackend:
        raise gen.NodeError("no network today")

    with pytest.raises(gen.NodeError):
        start_node(name, disabled_options(), backend_factory=broken)
    ergo_py.start_node(name, disabled_options()).stop()
