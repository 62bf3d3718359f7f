"""JSON log lines (``lib.configure_logging("json")``): one event per line, node/peer/fingerprint."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ergo_py import gen
from ergo_py.lib.logs import JSONFormatter, configure_logging, fields
from ergo_py.testing import Cluster, Echo


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root, ours = logging.getLogger(), logging.getLogger("ergo_py")
    level, ours_level, handlers = root.level, ours.level, list(root.handlers)
    out = io.StringIO()
    configure_logging("json", logging.INFO, out)
    ours.setLevel(logging.NOTSET)  # a module imported earlier may have quietened it
    try:
        yield out
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
        ours.setLevel(ours_level)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_record_becomes_one_json_line_with_the_node_fields() -> None:
    log = logging.getLogger("ergo_py.test")
    record = log.makeRecord(
        log.name, logging.WARNING, __file__, 1, "%s: refused %s", ("a@h", "b@h"), None,
        extra={**fields("a@h", "b@h", "ab12"), "attempt": 3},
    )  # fmt: skip
    try:
        raise OSError("boom\nsecond line")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    line = JSONFormatter().format(record)
    assert "\n" not in line  # the traceback's newlines are escaped inside the string
    got = json.loads(line)
    assert got["message"] == "a@h: refused b@h" and got["level"] == "WARNING"
    assert (got["node"], got["peer"], got["fingerprint"]) == ("a@h", "b@h", "ab12")
    assert got["attempt"] == 3 and "OSError: boom" in got["exc"]
    assert got["ts"].endswith("+00:00") and got["logger"] == "ergo_py.test"


def test_a_line_from_a_node_loop_thread_names_the_node() -> None:
    log = logging.getLogger("ergo_py.test")
    records: list[logging.LogRecord] = []

    def emit() -> None:
        records.append(log.makeRecord(log.name, logging.INFO, __file__, 1, "x", (), None))

    t = threading.Thread(target=emit, name="ergo-loop[n1@10.0.0.1]")
    t.start()
    t.join()
    got = json.loads(JSONFormatter().format(records[0]))
    assert got["node"] == "n1@10.0.0.1" and got["peer"] is None and got["fingerprint"] is None


def test_connection_lines_carry_node_peer_and_the_peer_certificate(json_logs: io.StringIO) -> None:
    with Cluster(names=["a@127.0.0.1", "b@127.0.0.1"]) as cluster:
        echo = cluster["b@127.0.0.1"].spawn(Echo)
        assert cluster["a@127.0.0.1"].call(echo, 1) == 1
        b_fp = cluster.managers["b@127.0.0.1"].get_certificate().fingerprint
    lines = _lines(json_logs.getvalue())
    assert lines and all({"ts", "level", "logger", "message", "node"} <= set(d) for d in lines)
    connected = [d for d in lines if d["logger"] == "ergo_py.node.connections"]
    assert any(
        d["node"] == "a@127.0.0.1" and d["peer"] == "b@127.0.0.1" and d["fingerprint"] == b_fp
        for d in connected
    ), connected


def test_a_refused_dial_is_a_json_line_with_our_fingerprint(json_logs: io.StringIO) -> None:
    with Cluster(names=["a@127.0.0.1"]) as cluster:
        a = cluster["a@127.0.0.1"]
        a.network().add_route("gone@.*", gen.NetworkRoute(host="127.0.0.1", port=1))
        with pytest.raises(gen.ErrNoConnection):
            a.call(gen.ProcessID("x", "gone@127.0.0.1"), 1)
        ours = cluster.managers["a@127.0.0.1"].get_certificate().fingerprint
    (line,) = [d for d in _lines(json_logs.getvalue()) if d["logger"] == "ergo_py.node.dialer"]
    assert line["level"] == "WARNING"
    assert (line["node"], line["peer"], line["fingerprint"]) == (
        "a@127.0.0.1",
        "gone@127.0.0.1",
        ours,
    )


def test_process_nodes_log_json_when_the_parent_does(
    json_logs: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    with Cluster(names=["p@127.0.0.1", "q@127.0.0.1"], processes=True) as cluster:
        echo = cluster["q@127.0.0.1"].spawn(Echo)
        assert cluster["p@127.0.0.1"].call(echo, 1) == 1
    child = _lines(capfd.readouterr().err)  # the children write to the stderr they inherit
    assert any(d["node"] == "p@127.0.0.1" and d["peer"] == "q@127.0.0.1" for d in child), child[:5]


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(gen.ErrIncorrect):
        configure_logging("xml")
