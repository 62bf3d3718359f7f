"""The observer: a node's state as one snapshot, served as a live web page.

:func:`snapshot` is the one source of data: the node, its health, its own
certificate (time to expiry, and a level the page colours), every connection
(peer, identity verified, our certificate version and fingerprint on it, the
peer's certificate subject and expiry, TLS version, pool links, messages),
the recent node events (the observer's ring buffer, ``Observer.recent``) and
the processes with their mailbox sizes. ``/observer.json`` serves it;
``/`` serves an HTML page rendered from it on the server, whose few lines of
JavaScript (no build step) poll ``/observer.json`` every second and redraw
the page from it. Nothing here writes to the node.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from ergo_py.gen.errors import ErgoError
from ergo_py.node.asgi import NOT_FOUND, PLAIN, Reply, path_app

if TYPE_CHECKING:
    from ergo_py.node.core import Core

DAY = timedelta(days=1)
MAX_PROCESSES = 500


def expiry_level(left: timedelta, margin: timedelta) -> str:
    """``ok``, ``warn`` (within the margin), ``bad`` (within a day) or ``expired``."""
    if left <= timedelta(0):
        return "expired"
    if left <= DAY:
        return "bad"
    if left <= margin:
        return "warn"
    return "ok"


def _event(event: Any) -> dict[str, Any]:
    fields = {k: v for k, v in vars(event).items() if k != "at"}
    if isinstance(fields.get("info"), dict):  # EventConnectionUp: the interesting part
        info = fields.pop("info")
        fields["cert_version"] = info.get("cert_version")
        fields["tls"] = info.get("tls")
    text = ", ".join(f"{k}={plain(v)}" for k, v in fields.items())
    return {"at": event.at.isoformat(), "kind": type(event).__name__, "text": text}


def plain(value: Any) -> Any:
    """``value`` as plain msgpack/JSON data: dicts with str keys, lists, str, numbers, None."""
    if isinstance(value, Enum):  # before int: IntEnum is an int
        return value.name
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)  # Atom -> str
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def snapshot(core: Core) -> dict[str, Any]:
    """The node's state now, as plain JSON data (see the module docstring)."""
    now = datetime.now(UTC)
    obs = core.observer
    margin = obs.margin
    health = core.health()
    cert: dict[str, Any] | None = None
    manager = core.cert_manager()
    if manager is not None:
        state = manager.state()
        c = state.certificate
        left = c.not_after - now
        cert = {
            "version": state.version,
            "fingerprint": c.fingerprint,
            "subject": c.subject,
            "not_after": c.not_after,
            "seconds_left": int(left.total_seconds()),
            "level": expiry_level(left, margin),
            "client_auth": state.client_auth,
        }
    connections: list[dict[str, Any]] = []
    acceptors: list[str] = []
    try:
        network = core.network()
        acceptors = [f"{a.host}:{a.port}" for a in network.acceptors()]
        for peer in sorted(network.nodes()):
            try:
                info = network.info(peer)
            except ErgoError:
                continue  # went away between nodes() and info()
            not_after = info.get("peer_cert_not_after")
            level = expiry_level(not_after - now, margin) if not_after is not None else None
            connections.append(
                {
                    "peer": info["peer"],
                    "dialed": info["dialed"],
                    "identity_verified": info["identity_verified"],
                    "local_cert_version": info.get("local_cert_version"),
                    "local_cert_fingerprint": info.get("local_cert_fingerprint"),
                    "peer_cert_subject": info.get("peer_cert_subject"),
                    "peer_cert_not_after": not_after,
                    "peer_cert_level": level,
                    "tls_version": info.get("tls_version"),
                    "pool_links": info["pool_links"],
                    "messages_in": info["messages_in"],
                    "messages_out": info["messages_out"],
                }
            )
    except ErgoError:
        pass  # no network
    recent = list(obs.recent) if obs.recent is not None else []
    snap: dict[str, Any] = plain(
        {
            "node": core.node_of().name,
            "creation": core.node_of().creation,
            "now": now,
            "health": {"ready": health.ready, "reasons": health.reasons},
            "margin_seconds": int(margin.total_seconds()),
            "cert": cert,
            "acceptors": acceptors,
            "nodes": [core.node_of().name, *(c["peer"] for c in connections)],
            "connections": connections,
            "events": [_event(e) for e in reversed(recent)],
            "processes": core.processes_info(MAX_PROCESSES),
        }
    )
    return snap


# ---------------------------------------------------------------------------
# the page

_CSS = """
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top} th{background:#eee}
.ok{background:#dff0d8}.warn{background:#fcf8e3}.bad{background:#f8d7a0}.expired{background:#f2b8b8}
.mono{font-family:ui-monospace,monospace;font-size:12px} .muted{color:#777}
#events td{font-size:12px}
"""

# Redraws the page from /observer.json every second (the same layout as the
# server renders; the ids tie the two together).
_JS = r"""
const ENT = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"};
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ENT[c]);
const short = fp => fp ? esc(fp.slice(0, 16)) : "";
const left = s => { if (s <= 0) return "expired"; const d = Math.floor(s / 86400),
  h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`; };
function row(cells, cls) {
  return `<tr${cls ? ` class="${cls}"` : ""}>` + cells.map(c => `<td>${c}</td>`).join("") + "</tr>";
}
function draw(s) {
  document.getElementById("node").textContent = s.node;
  document.getElementById("nodes").textContent = s.nodes.join(", ");
  const h = document.getElementById("health");
  h.textContent = s.health.ready ? "ready" : "not ready: " + s.health.reasons.join("; ");
  h.className = s.health.ready ? "ok" : "bad";
  const c = s.cert, cert = document.getElementById("cert");
  if (c) { cert.className = c.level;
    cert.innerHTML = `version <b id="cert-version">${c.version}</b>, ` +
    `<span class="mono">${short(c.fingerprint)}</span>, ${esc(c.subject)}, ` +
    `expires ${esc(c.not_after)} ` +
    `(in <b>${left(c.seconds_left)}</b>), client auth ${esc(c.client_auth)}`; }
  document.getElementById("conns").innerHTML = s.connections.map(x => row([esc(x.peer),
    x.dialed ? "dialed" : "accepted", x.identity_verified ? "yes" : "<b>no</b>",
    esc(x.local_cert_version), `<span class="mono">${short(x.local_cert_fingerprint)}</span>`,
    esc(x.peer_cert_subject),
    `<span class="${x.peer_cert_level || ""}">${esc(x.peer_cert_not_after)}</span>`,
    esc(x.tls_version), x.pool_links, x.messages_in, x.messages_out], "conn")).join("");
  document.getElementById("events").innerHTML = s.events.map(e => row([esc(e.at.slice(11, 23)),
    esc(e.kind), esc(e.text)])).join("");
  document.getElementById("procs").innerHTML = s.processes.map(p => row([esc(p.pid),
    esc(p.names.join(", ")), p.mailbox])).join("");
  document.getElementById("updated").textContent = "updated " + s.now.slice(11, 19) + " UTC";
}
async function poll() {
  try {
    const r = await fetch("observer.json", {cache: "no-store"});
    if (r.ok) draw(await r.json());
  }
  catch (e) { document.getElementById("updated").textContent = "node unreachable: " + e; }
  setTimeout(poll, 1000);
}
setTimeout(poll, 1000);
"""


def _left(seconds: int) -> str:
    if seconds <= 0:
        return "expired"
    d, h, m = seconds // 86400, seconds % 86400 // 3600, seconds % 3600 // 60
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m {seconds % 60}s"


def _rows(rows: list[list[Any]], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return "".join(
        f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for cells in rows
    )


def render(s: dict[str, Any]) -> str:
    """The page for snapshot ``s`` (values escaped; the script keeps it current)."""
    e = html.escape

    def fp(v: Any) -> str:
        return f'<span class="mono">{e(str(v or "")[:16])}</span>'

    c = s["cert"]
    if c is not None:
        cert = (
            f'<p id="cert" class="{c["level"]}">version <b id="cert-version">{c["version"]}</b>, '
            f"{fp(c['fingerprint'])}, {e(c['subject'])}, expires {e(c['not_after'])} "
            f"(in <b>{_left(c['seconds_left'])}</b>), client auth {e(str(c['client_auth']))}</p>"
        )
    else:
        cert = '<p id="cert" class="muted">no certificate (plain TCP)</p>'
    h = s["health"]
    health = "ready" if h["ready"] else "not ready: " + "; ".join(h["reasons"])
    conns = _rows(
        [
            [
                e(x["peer"]),
                "dialed" if x["dialed"] else "accepted",
                "yes" if x["identity_verified"] else "<b>no</b>",
                e(str(x["local_cert_version"])),
                fp(x["local_cert_fingerprint"]),
                e(str(x["peer_cert_subject"] or "")),
                f'<span class="{x["peer_cert_level"] or ""}">'
                f"{e(str(x['peer_cert_not_after'] or ''))}</span>",
                e(str(x["tls_version"] or "")),
                x["pool_links"],
                x["messages_in"],
                x["messages_out"],
            ]
            for x in s["connections"]
        ],
        "conn",
    )
    events = _rows([[e(v["at"][11:23]), e(v["kind"]), e(v["text"])] for v in s["events"]])
    procs = _rows([[e(p["pid"]), e(", ".join(p["names"])), p["mailbox"]] for p in s["processes"]])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(s["node"])}: observer</title>
<style>{_CSS}</style></head><body>
<h1>Node <span id="node">{e(s["node"])}</span></h1>
<p>health: <span id="health" class="{"ok" if h["ready"] else "bad"}">{e(health)}</span>
&middot; nodes: <span id="nodes">{e(", ".join(s["nodes"]))}</span>
&middot; acceptors: {e(", ".join(s["acceptors"]) or "none")}
&middot; <span id="updated" class="muted">rendered {e(s["now"][11:19])} UTC</span></p>
<h2>Certificate</h2>{cert}
<h2>Connections</h2>
<table><thead><tr><th>peer</th><th>side</th><th>identity verified</th><th>our cert version</th>
<th>our cert</th><th>peer cert subject</th><th>peer cert expires</th><th>TLS</th>
<th>pool links</th><th>msgs in</th><th>msgs out</th></tr></thead>
<tbody id="conns">{conns}</tbody></table>
<h2>Recent events</h2>
<table><thead><tr><th>at (UTC)</th><th>event</th><th>details</th></tr></thead>
<tbody id="events">{events}</tbody></table>
<h2>Processes</h2>
<table><thead><tr><th>pid</th><th>names</th><th>mailbox</th></tr></thead>
<tbody id="procs">{procs}</tbody></table>
<script>{_JS}</script>
</body></html>
"""


def make_app(snap: Callable[[], dict[str, Any]]) -> Any:
    """An ASGI 3 app: ``/`` (the page) and ``/observer.json`` (the snapshot)."""

    async def handle(path: str) -> Reply:
        if path not in ("/", "/index.html", "/observer.json"):
            return NOT_FOUND
        try:
            # off the server's loop: a snapshot may wait on another node (the CLI)
            s = await asyncio.to_thread(snap)
        except Exception as exc:
            return 502, PLAIN, f"no snapshot: {exc}\n".encode()
        if path == "/observer.json":
            return 200, "application/json", json.dumps(s).encode()
        return 200, "text/html; charset=utf-8", render(s).encode()

    return path_app(handle, headers=[(b"cache-control", b"no-store")])
