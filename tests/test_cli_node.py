"""``ergo-py node run`` config checking, and ``node run`` + ``inspect`` end to end."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ergo_py
from ergo_py import gen
from ergo_py.cli.inspect import format_report
from ergo_py.cli.main import main
from ergo_py.cli.node import ConfigError, inspect_report, load_config, plain, run_node
from ergo_py.lib import CertificateAuthority
from ergo_py.net.retry import wait_until
from ergo_py.testing import free_port

HOST = "127.0.0.1"
NODE = f"a@{HOST}"
WAIT = 10.0


def write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, as rotation tools do."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save(d: Path, prefix: str, cert: gen.Certificate) -> None:
    cert_pem, key_pem = cert.to_pem()
    write(d / f"{prefix}-key.pem", key_pem)
    write(d / f"{prefix}.pem", cert_pem)


def config_text(port: int, **extra: str) -> str:
    text = f"""
[node]
name = "{NODE}"
cookie = "secret"
log_level = "info"
{extra.get("node", "")}

[[acceptors]]
host = "{HOST}"
port = {port}

[tls]
cert = "a.pem"
key = "a-key.pem"
client_cas = "ca.pem"
root_cas = "ca.pem"
poll_interval = 0.1

[registrar]
enabled = false

[inspect]
cert = "inspector.pem"
key = "inspector-key.pem"
"""
    return text + extra.get("tail", "")


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("cli node test CA")


@pytest.fixture
def files(key_dir: Path, ca: CertificateAuthority) -> Path:
    """Certificates, keys and a CA file for node a and an inspector, in key_dir."""
    save(key_dir, "a", ca.issue(NODE, hosts=(HOST,)))
    save(key_dir, "inspector", ca.issue(f"inspector@{HOST}", hosts=(HOST,)))
    write(key_dir / "ca.pem", ca.to_pem()[0])
    return key_dir


def cfg(d: Path, text: str) -> Path:
    (d / "node.toml").write_text(text)
    return d / "node.toml"


# --- config checking ----------------------------------------------------------


def test_a_complete_config_is_read_with_paths_next_to_it(files: Path) -> None:
    route = '[[routes]]\nmatch = "b@.*"\nhost = "10.0.0.2"\nport = 11145\ntls = true\n'
    config = load_config(cfg(files, config_text(12000, tail=route)))
    assert config.name == NODE and config.cookie == "secret"
    assert config.acceptors[0].port == 12000
    assert config.tls is not None and config.tls.cert == files / "a.pem"
    assert config.tls.client_auth == gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT
    assert config.routes[0].match == "b@.*" and config.routes[0].tls is True
    assert not config.registrar_enabled
    assert config.inspect_cert == files / "inspector.pem"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[node]", "[node]\ncolour = 'red'"), "node.colour: unknown key in node"),
        (("[registrar]", "[registrar]\nprot = 1"), "registrar.prot: unknown key in registrar"),
        (
            ("log_level =", "log_levle ="),
            "node.log_levle: unknown key in node (did you mean 'log_level'?)",
        ),
        (("port = 12000", 'port = "12000"'), "acceptors[0].port: Input should be a valid integer"),
        (
            ("port = 12000", "port = 70000"),
            "acceptors[0].port: Input should be less than or equal to 65535",
        ),
        (('name = "a@127.0.0.1"', 'name = "a"'), "node.name: must look like name@host"),
        (('log_level = "info"', 'log_level = "loud"'), "node.log_level"),
        (("poll_interval = 0.1", "poll_interval = 0"), "tls.poll_interval"),
        (("poll_interval = 0.1", "client_auth = 'request_client_cert'"), "not supported"),
        (("poll_interval = 0.1", "client_auth = 'sometimes'"), "tls.client_auth"),
        (('cookie = "secret"', ""), "node.cookie: missing"),
        (("[node]", "[node"), "not valid TOML"),
        (
            ("[inspect]", "[[actors]]\nname = 'x'\nfactory = 'nocolon'\n[inspect]"),
            "actors[0].factory",
        ),
    ],
)
def test_a_bad_config_is_a_config_error_naming_the_key(
    files: Path, change: tuple[str, str], message: str
) -> None:
    text = config_text(12000).replace(*change, 1)
    with pytest.raises(ConfigError) as info:
        load_config(cfg(files, text))
    assert message in str(info.value)


def test_a_bad_config_exits_2_with_one_line_and_no_traceback(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cfg(files, config_text(12000).replace("[node]", "[node]\ncolour = 'red'"))
    assert main(["node", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "colour" in err and "Traceback" not in err and err.count("\n") == 1


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "run", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_cookie_env_reads_the_cookie_from_the_environment(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERGO_TEST_COOKIE", "from-env")
    text = config_text(12000).replace('cookie = "secret"', 'cookie_env = "ERGO_TEST_COOKIE"')
    assert load_config(cfg(files, text)).cookie == "from-env"


def test_plain_turns_tuples_datetimes_and_enums_into_msgpack_friendly_values() -> None:
    from datetime import UTC, datetime

    value = {
        "t": (1, gen.Atom("x")),
        "when": datetime(2030, 1, 2, tzinfo=UTC),
        3: gen.ClientAuth(4),
    }
    assert plain(value) == {
        "t": [1, "x"],
        "when": "2030-01-02T00:00:00+00:00",
        "3": "REQUIRE_AND_VERIFY_CLIENT_CERT",
    }


# --- running ----------------------------------------------------------------


@pytest.fixture
def in_process_node(files: Path) -> Iterator[tuple[Path, threading.Event]]:
    """``run_node`` on a thread (stopped after the test); yields the config path and stop."""
    path = cfg(files, config_text(free_port()))
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_node(load_config(path), stop)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    try:
        yield path, stop
    finally:
        stop.set()
        t.join(WAIT)
        assert not t.is_alive() and not errors


def inspect_json(
    config: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any] | str]:
    """Run ``ergo-py inspect --config CONFIG --json`` in-process until it answers (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        status = main(["inspect", "--config", str(config), "--json", "--timeout", "3", *extra])
        out, err = capsys.readouterr()
        if status == 0:
            return status, json.loads(out)
        if time.monotonic() > deadline:
            return status, err
        time.sleep(0.1)


def test_inspect_reports_the_nodes_certificate_and_its_own_connection(
    in_process_node: tuple[Path, threading.Event], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = in_process_node
    status, report = inspect_json(path, capsys)
    assert status == 0 and isinstance(report, dict)
    assert report["node"] == NODE
    assert report["cert"]["version"] == 1
    assert report["cert"]["client_auth"] == "REQUIRE_AND_VERIFY_CLIENT_CERT"
    here = report["inspector"]["connection"]
    assert here["peer_cert_fingerprint"] == report["cert"]["fingerprint"]
    assert here["identity_verified"] is True
    peers = {p["peer"]: p for p in report["peers"]}
    assert peers[f"inspector@{HOST}"]["tls_version"].startswith("TLSv1")
    text = format_report(report)
    assert "this inspection" in text and report["cert"]["fingerprint"] in text
    # the observer page's snapshot rides along: health, recent events, processes
    snap = report["observer"]
    assert snap["node"] == NODE and snap["health"]["ready"] is True
    assert "EventConnectionUp" in [e["kind"] for e in snap["events"]]
    assert "health: ready" in text and "EventConnectionUp" in text


def test_observer_command_serves_the_nodes_page_from_its_snapshot(
    in_process_node: tuple[Path, threading.Event], capsys: pytest.CaptureFixture[str]
) -> None:
    from ergo_py.cli.client import ClientPlan
    from ergo_py.cli.observer import serve

    path, _ = in_process_node
    inspect_json(path, capsys)  # the node is up
    port = free_port()
    plan = ClientPlan(None, {"config": str(path), "timeout": 3})
    stop = threading.Event()
    status: list[int] = []
    t = threading.Thread(target=lambda: status.append(serve(plan, (HOST, port), stop)), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                r = httpx.get(f"http://{HOST}:{port}/observer.json", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        snap = r.json()
        assert r.status_code == 200 and snap["node"] == NODE
        assert f"inspector@{HOST}" in [c["peer"] for c in snap["connections"]]
        page = httpx.get(f"http://{HOST}:{port}/", timeout=5)
        assert f"<td>inspector@{HOST}</td>" in page.text
    finally:
        stop.set()
        t.join(WAIT)
    assert status == [0]


def test_inspect_of_an_unreachable_node_exits_1_with_a_message(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cfg(files, config_text(free_port()))  # nobody listens there
    assert main(["inspect", "--config", str(path), "--timeout", "2"]) == 1
    assert "cannot connect to a@127.0.0.1" in capsys.readouterr().err


def test_inspect_refuses_a_client_certificate_naming_the_target(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cfg(files, config_text(free_port()))
    args = ["--cert", str(files / "a.pem"), "--key", str(files / "a-key.pem")]
    assert main(["inspect", "--config", str(path), *args]) == 2
    assert "issue a separate certificate" in capsys.readouterr().err


def test_inspect_report_is_plain_data(node: gen.Node) -> None:
    report = inspect_report(node, None)
    assert report == plain(report)
    assert report["cert"] is None and report["peers"] == []


def test_reconnect_on_rotate_moves_a_live_connection_onto_the_new_files(
    files: Path, ca: CertificateAuthority
) -> None:
    b_port = free_port()
    route = f'[[routes]]\nmatch = "b@.*"\nhost = "{HOST}"\nport = {b_port}\ntls = true\n'
    path = cfg(files, config_text(free_port(), node="reconnect_on_rotate = true", tail=route))
    config = load_config(path)
    assert config.acceptors
    stop = threading.Event()
    runner = threading.Thread(target=run_node, args=(config, stop), daemon=True)
    runner.start()
    cam = gen.create_cert_auth_manager(ca.issue(f"b@{HOST}", hosts=(HOST,)))
    cam.set_root_cas(ca.pool())
    cam.set_client_cas(ca.pool())
    cam.set_client_auth(gen.ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT)
    options = gen.NodeOptions(cert_manager=cam)
    options.network.cookie = "secret"
    options.network.registrar_enabled = False
    options.network.acceptors = [gen.AcceptorOptions(host=HOST, port=b_port)]
    b = ergo_py.start_node(f"b@{HOST}", options)
    try:
        route = gen.NetworkRoute(host=HOST, port=config.acceptors[0].port, tls=True)
        b.network().add_route("a@.*", route)
        deadline = time.monotonic() + WAIT
        while True:  # the node needs a moment to listen
            try:
                b.call(gen.ProcessID("ergo_py_inspect", NODE), "inspect", timeout=3)
                break
            except gen.ErrNoConnection:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        new = ca.issue(NODE, hosts=(HOST,))
        save(files, "a", new)
        deadline = time.monotonic() + WAIT
        seen = None
        while time.monotonic() < deadline:
            seen = (
                b.network().info(NODE)["peer_cert_fingerprint"]
                if NODE in b.network().nodes()
                else None
            )
            if seen == new.fingerprint:
                break
            time.sleep(0.05)
        assert seen == new.fingerprint  # a moved the connection; b did not dial again
    finally:
        b.stop()
        stop.set()
        runner.join(WAIT)
    assert not runner.is_alive()


def test_node_run_subprocess_reloads_rotated_files_seen_by_a_new_inspection(
    files: Path, ca: CertificateAuthority, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = cfg(files, config_text(free_port()))
    log_file = tmp_path / "node.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ergo_py.cli.main", "node", "run", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        status, report = inspect_json(path, capsys)
        assert status == 0 and isinstance(report, dict), (report, log_file.read_text())
        old = report["cert"]["fingerprint"]
        # node.gc_freeze (default on): what start-up made is out of the collector's way
        assert report["gc_frozen"] > 0

        new = ca.issue(NODE, hosts=(HOST,))
        save(files, "a", new)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            status, report = inspect_json(path, capsys)
            assert status == 0 and isinstance(report, dict), report
            # The inspection that saw the reload may have connected just
            # before it: wait for one whose own connection is on the new cert.
            seen = report["inspector"]["connection"]["peer_cert_fingerprint"]
            if report["cert"]["fingerprint"] != old and seen == new.fingerprint:
                break
            time.sleep(0.1)
        assert report["cert"]["fingerprint"] == new.fingerprint
        assert report["cert"]["version"] == 2
        # a NEW connection is made with the new certificate
        assert report["inspector"]["connection"]["peer_cert_fingerprint"] == new.fingerprint
        assert report["watcher"]["reloads"] == 1

        proc.terminate()
        assert proc.wait(WAIT) == 0, log_file.read_text()
        assert "SIGTERM received, stopping" in log_file.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)


def test_node_run_no_gc_freeze_leaves_the_collector_alone(
    files: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = cfg(files, config_text(free_port()))
    assert load_config(path).gc_freeze
    assert not load_config(path, ["node.gc_freeze=false"], environ={}).gc_freeze
    log_file = tmp_path / "node.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ergo_py.cli.main", "node", "run", "--no-gc-freeze", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        status, report = inspect_json(path, capsys)
        assert status == 0 and isinstance(report, dict), (report, log_file.read_text())
        assert report["gc_frozen"] == 0
        proc.terminate()
        assert proc.wait(WAIT) == 0, log_file.read_text()
        assert "gc.freeze() off" in log_file.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)


@pytest.mark.parametrize("name", ["a", "b"])
def test_the_example_configs_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / f"{name}.toml"
    assert main(["node", "check", "--syntax-only", str(example)]) == 0
    assert f"syntax ok (node {name}@127.0.0.1)" in capsys.readouterr().out


# --- overrides, node check, send/call, explained failures --------------------------


def test_environment_then_set_override_the_file(files: Path) -> None:
    path = cfg(files, config_text(12000))
    env = {"ERGO_PY_NODE__LOG_LEVEL": "debug", "ERGO_PY_LOOP": "asyncio"}  # no "__": not ours
    config = load_config(path, ["registrar.port=4600"], environ=env)
    assert config.log_level == logging.DEBUG and config.registrar_port == 4600
    config = load_config(path, ["node.log_level=warning"], environ=env)  # --set wins
    assert config.log_level == logging.WARNING


def test_a_bad_override_names_the_variable_and_suggests(files: Path) -> None:
    path = cfg(files, config_text(12000))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"ERGO_PY_NODE__LOG_LEVL": "debug"})
    assert "ERGO_PY_NODE__LOG_LEVL" in str(info.value) and "'log_level'" in str(info.value)
    with pytest.raises(ConfigError, match=r"--set tls\.poll_interval.*greater than 0"):
        load_config(path, ["tls.poll_interval=0"], environ={})


def test_relative_paths_in_set_are_from_the_current_directory(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files)
    config = load_config(cfg(files, config_text(12000)), ["tls.cert=other.pem"], environ={})
    assert config.tls is not None and config.tls.cert == files / "other.pem"


def check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    status = main(["node", "check", str(path), *extra])
    out, err = capsys.readouterr()
    return status, out + err


def test_node_check_passes_good_files(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = check(cfg(files, config_text(12000)), capsys)
    assert status == 0 and f"ok (node {NODE})" in out


def test_node_check_names_missing_files_and_the_command_that_makes_them(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (files / "a.pem").unlink()
    status, out = check(cfg(files, config_text(12000)), capsys)
    assert status == 2
    assert "a.pem: no such file (check: file exists)" in out
    assert f"ergo-py cert issue {NODE} --ca-dir" in out and "--out" in out


def test_node_check_refuses_a_certificate_from_another_ca(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = CertificateAuthority.create("another CA")
    save(files, "a", other.issue(NODE, hosts=(HOST,)))
    status, out = check(cfg(files, config_text(12000)), capsys)
    assert status == 2
    assert "check: CA chain (against tls.root_cas" in out
    assert "unable to get local issuer certificate" in out and "Fix:" in out


def test_node_check_refuses_a_certificate_naming_another_node(
    files: Path, ca: CertificateAuthority, capsys: pytest.CaptureFixture[str]
) -> None:
    save(files, "a", ca.issue(f"b@{HOST}", hosts=(HOST,)))
    status, out = check(cfg(files, config_text(12000)), capsys)
    assert status == 2
    assert f"it names b@{HOST}" in out and f"check: certificate names the node {NODE}" in out


def test_node_check_refuses_a_key_of_another_certificate(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = check(
        cfg(files, config_text(12000)), capsys, "--set", f"tls.key={files / 'inspector-key.pem'}"
    )
    assert status == 2 and "inspector-key.pem" in out and "check: key matches" in out


def test_node_check_refuses_an_actor_that_does_not_import(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tail = '[[actors]]\nname = "x"\nfactory = "no_such_module:X"\n'
    status, out = check(cfg(files, config_text(12000, tail=tail)), capsys)
    assert status == 2 and "actors[0].factory: cannot import 'no_such_module'" in out


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ACTORS = """
[[actors]]
name = "greeter"
factory = "hello:Greeter"
args = ["hi"]
"""


@pytest.fixture
def node_with_actors(files: Path) -> Iterator[Path]:
    """``run_node`` hosting examples/hello.py's Greeter as "greeter"; yields the config path."""
    text = config_text(free_port(), node=f'pythonpath = ["{EXAMPLES}"]', tail=ACTORS)
    path = cfg(files, text)
    stop = threading.Event()
    runner = threading.Thread(target=run_node, args=(load_config(path), stop), daemon=True)
    runner.start()
    try:
        yield path
    finally:
        stop.set()
        runner.join(WAIT)
    assert not runner.is_alive()


def test_send_and_call_reach_an_actor_hosted_from_the_config(
    node_with_actors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = ["--config", str(node_with_actors)]
    assert main(["send", NODE, "greeter", '{"n": 1}', *conf]) == 0  # waits for the node
    assert capsys.readouterr().out.strip() == f"sent to greeter on {NODE}"
    assert main(["send", NODE, "greeter", "plain words", *conf]) == 0
    capsys.readouterr()
    assert main(["call", NODE, "greeter", "seen", *conf]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 1}, "plain words"]
    assert main(["call", NODE, "greeter", "42", "--string", *conf]) == 0
    assert json.loads(capsys.readouterr().out) == f"hi, 42, from {NODE}"


def test_call_of_an_unknown_process_exits_1_naming_it(
    node_with_actors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", NODE, "nobody", "1", "--config", str(node_with_actors)]) == 1
    assert f"{NODE} has no process registered as 'nobody'" in capsys.readouterr().err


def test_inspect_with_the_wrong_ca_says_the_ca_is_wrong(
    in_process_node: tuple[Path, threading.Event],
    capsys: pytest.CaptureFixture[str],
    key_dir: Path,
) -> None:
    path, _ = in_process_node
    inspect_json(path, capsys)  # the node is up
    write(key_dir / "other-ca.pem", CertificateAuthority.create("other").to_pem()[0])
    status = main(["inspect", "--config", str(path), "--ca", str(key_dir / "other-ca.pem")])
    err = capsys.readouterr().err
    assert status == 1
    assert "does not verify against the CA in" in err and "other-ca.pem" in err
    assert "check: CA chain" in err and "Fix: give --ca" in err
    assert "Traceback" not in err and "SSLCertVerificationError" not in err


def test_node_run_refuses_missing_files_naming_them_before_starting(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (files / "a-key.pem").unlink()
    assert main(["node", "run", str(cfg(files, config_text(free_port())))]) == 2
    err = capsys.readouterr().err
    assert "a-key.pem: no such file (check: file exists)" in err and "Traceback" not in err


def test_rotated_files_naming_another_node_are_refused_naming_the_check(
    files: Path, ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(cfg(files, config_text(free_port())))
    stop = threading.Event()
    up: list[gen.Node] = []
    with caplog.at_level(logging.INFO, logger="ergo_py.lib.reload"):
        runner = threading.Thread(
            target=run_node, args=(config, stop), kwargs={"started": up.append}, daemon=True
        )
        runner.start()
        try:
            deadline = time.monotonic() + WAIT
            while not up:
                assert time.monotonic() < deadline and runner.is_alive(), caplog.text
                time.sleep(0.05)
            cm = up[0].cert_manager()
            assert cm is not None
            before = cm.get_certificate().fingerprint
            save(files, "a", ca.issue(f"b@{HOST}", hosts=(HOST,)))  # a rotation gone wrong

            def refusals() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "not applied" in r.getMessage()]

            while not refusals():
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
            # the node keeps serving on what it had
            assert cm.get_certificate().fingerprint == before
            assert up[0].health().ready
        finally:
            stop.set()
            runner.join(WAIT)
    warning = refusals()[0]
    assert warning.levelno == logging.WARNING
    assert "node_name" in warning.getMessage()
    assert NODE in warning.getMessage()
    assert "fix:" in warning.getMessage()


@pytest.mark.parametrize(
    ("flag", "node_key"),
    [(["--log-format", "json"], ""), ([], 'log_format = "json"')],
    ids=["flag", "config-key"],
)
def test_node_run_logs_one_json_object_per_line_when_asked(
    files: Path, tmp_path: Path, flag: list[str], node_key: str
) -> None:
    path = cfg(files, config_text(free_port(), node=node_key))
    log_file = tmp_path / "node.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ergo_py.cli.main", "node", "run", *flag, str(path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        assert wait_until(lambda: NODE in log_file.read_text(), WAIT), log_file.read_text()
        proc.terminate()
        assert proc.wait(WAIT) == 0, log_file.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines and all(set(line) >= {"ts", "level", "logger", "message"} for line in lines)
    assert any(line["message"] == "SIGTERM received, stopping" for line in lines)
    assert any(line["node"] == NODE for line in lines)


def test_a_log_format_other_than_text_or_json_is_a_config_error(files: Path) -> None:
    text = config_text(12000, node='log_format = "xml"')
    with pytest.raises(ConfigError, match=r"node\.log_format"):
        load_config(cfg(files, text))
