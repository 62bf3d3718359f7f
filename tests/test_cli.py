"""The ergo-py command: help, version, completion, certificate files and the demo."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import click
import pytest

from ergo_py import gen, lib
from ergo_py._version import __version__
from ergo_py.cli.main import cli, main


def test_ca_init_then_issue_writes_a_usable_node_certificate(key_dir: Path) -> None:
    assert main(["cert", "ca-init", "--dir", str(key_dir / "ca")]) == 0
    prefix = str(key_dir / "a")
    assert (
        main(["cert", "issue", "a@localhost", "--ca-dir", str(key_dir / "ca"), "--out", prefix])
        == 0
    )
    cert = lib.load_x509_key_pair(f"{prefix}.pem", f"{prefix}-key.pem")
    assert list(cert.node_names) == ["a@localhost"]
    assert stat.S_IMODE((key_dir / "a-key.pem").stat().st_mode) == 0o600
    pool = gen.CertPool.from_file(key_dir / "ca" / "ca.pem")
    assert len(pool) == 1


def test_existing_files_are_not_overwritten_without_force(
    key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = str(key_dir / "dev")
    assert main(["cert", "self-signed", "--out", prefix]) == 0
    assert main(["cert", "self-signed", "--out", prefix]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["cert", "self-signed", "--out", prefix, "--force"]) == 0


def test_show_with_a_mismatched_key_fails_cleanly(key_dir: Path) -> None:
    main(["cert", "self-signed", "--out", str(key_dir / "one")])
    main(["cert", "self-signed", "--out", str(key_dir / "two")])
    status = main(["cert", "show", str(key_dir / "one.pem"), "--key", str(key_dir / "two-key.pem")])
    assert status == 2


def test_demo_cluster_rotates_live_without_failed_calls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "calls failed or answered wrong:  0" in out
    assert "identity verified: True" in out
    assert "demo passed" in out


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*path, name))
        else:
            out.append((*path, name))
    return out


COMMANDS = _commands(cli)
_MARKUP = re.compile(r"``|:(func|class|meth|mod|attr):|^\s*\.\. |`[^`]+`_", re.M)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "ergo-py")
def test_every_help_renders_without_markup(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: ergo-py")
    assert not _MARKUP.search(out), out


def test_every_option_has_help_and_a_stated_default() -> None:
    """Every option says what it does; one with a default value states it."""
    for path in COMMANDS:
        cmd = cli
        for name in path:
            assert isinstance(cmd, click.Group)
            cmd = cmd.commands[name]
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.name == "help":
                continue
            where = f"{' '.join(path)} {p.opts[0]}"
            assert p.help or p.name == "version", f"{where}: no help"
            default = p.get_default(click.Context(cmd), call=False)
            unset = default is None or type(default).__name__ == "Sentinel"  # click 8.3's UNSET
            if p.is_flag or p.required or p.multiple or unset:
                continue  # nothing to state: absent means not given
            stated = bool(p.show_default) or "[default" in (p.help or "")
            assert stated, f"{where}: no default shown"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ergo-py, version {__version__}"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    assert "_ERGO_PY_COMPLETE" in capsys.readouterr().out


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes"]) == 2
    assert "No such command 'nodes'" in capsys.readouterr().err


def test_show_prints_a_fingerprint_and_hosts_for_ca_and_self_signed_certificates(
    key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["cert", "ca-init", "--dir", str(key_dir / "ca")])
    main(["cert", "self-signed", "--host", "127.0.0.1", "--out", str(key_dir / "dev")])
    capsys.readouterr()
    for name, kind, hosts in (("ca/ca.pem", "CA", "-"), ("dev.pem", "leaf", "127.0.0.1")):
        assert main(["cert", "show", str(key_dir / name)]) == 0
        out = capsys.readouterr().out
        assert re.search(r"^fingerprint: [0-9a-f]{64}$", out, re.M), out
        assert f"kind:        {kind}" in out and f"hosts:       {hosts}" in out
        assert re.search(r"^valid:       \S+ \S+ UTC \.\. \S+ \S+ UTC$", out, re.M), out


def test_the_demos_live_view_shows_each_nodes_certificate_version() -> None:
    import io

    from rich.console import Console

    from ergo_py.cli.demo import _Callers, _view
    from ergo_py.testing import Cluster

    with Cluster(names=["a@127.0.0.1", "b@127.0.0.1"]) as cluster:
        cluster.rotate("a@127.0.0.1")
        callers = _Callers(cluster.nodes)
        callers.stats["ok"] = 7
        buf = io.StringIO()
        Console(file=buf, width=120).print(_view(callers, cluster.managers))
    text = buf.getvalue()
    assert "calls answered 7, failed 0" in text
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if "@" in line}
    assert rows == {"a@127.0.0.1": "2", "b@127.0.0.1": "1"}
