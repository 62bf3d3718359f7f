"""JSON log lines for log shippers: one event per line, with node, peer and fingerprint fields.

ergo_py logs through ``logging`` under stable names (``ergo_py.node.dialer``,
``ergo_py.node.connections``, ...); how the lines look is the application's
choice. :func:`configure_logging` with ``fmt="json"`` gives lines like::

    {"ts": "2026-12-04T17:40:01.123456+00:00", "level": "INFO",
     "logger": "ergo_py.node.connections", "message": "a@h: connected to b@h (...)",
     "node": "a@h", "peer": "b@h", "fingerprint": "5c1f...", "thread": "ergo-loop[a@h]"}

(on one line). ``node``, ``peer`` and ``fingerprint`` are always present
(null when a line has none): the node's lines pass them as ``extra``
(:func:`fields`), and a line logged on a node's loop thread without them
still gets ``node`` from the thread. Any other ``extra`` a caller passes is
kept as a field of its own; an exception is rendered under ``exc``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from ergo_py.gen.errors import ErrIncorrect

__all__ = ["JSONFormatter", "configure_logging", "fields", "json_configured"]

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_LOOP_THREAD = re.compile(r"^ergo-loop\[(?P<node>[^\]]*@[^\]]*)\]$")
_FIELDS = ("node", "peer", "fingerprint")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields(node: Any = None, peer: Any = None, fingerprint: Any = None) -> dict[str, Any]:
    """``extra=`` for a log call: the structured fields of a JSON line (str or None each)."""
    return {
        "node": None if node is None else str(node),
        "peer": None if peer is None else str(peer),
        "fingerprint": fingerprint,
    }


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            out[name] = getattr(record, name, None)
        if out["node"] is None:
            m = _LOOP_THREAD.match(record.threadName or "")
            if m is not None:
                out["node"] = m.group("node")
        out["thread"] = record.threadName
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(
    fmt: str = "json", level: int | str = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log line (the root logger's) to ``stream`` (stderr) as ``fmt``: json or text.

    Replaces handlers an earlier call installed, not others; returns the
    handler. Process nodes (``testing.ProcessNode``) started afterwards log
    in the same format.
    """
    if fmt not in ("json", "text"):
        raise ErrIncorrect(f"log format must be 'json' or 'text', not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler._ergo_py = True  # type: ignore[attr-defined]  # ours: replaced by the next call
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ergo_py", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def json_configured() -> bool:
    """Whether the root logger writes JSON lines (a child process then does too)."""
    return any(isinstance(h.formatter, JSONFormatter) for h in logging.getLogger().handlers)
