"""The node's own small ASGI apps (``/metrics``, the observer page): one shell for them.

Each app is a function from the request path to ``(status, content type,
body)``; the shell answers ASGI's lifespan messages and sends the response.
``meta.WebHandler`` and the benchmarks' app use the same two steps.
Served by ``meta.WebServer``, which the node does not import: it gets the
app and hands it over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Reply = tuple[int, str, bytes]
PLAIN = "text/plain; charset=utf-8"
NOT_FOUND: Reply = (404, PLAIN, b"not found\n")


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge ASGI lifespan messages until shutdown: an app with nothing to start or stop."""
    while True:
        message = await receive()
        kind = message["type"].rsplit(".", 1)[-1]
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return


async def respond(
    send: Any,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain",
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole HTTP response: ``status`` and ``body``, with its length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def path_app(
    handle: Callable[[str], Awaitable[Reply]], headers: Sequence[tuple[bytes, bytes]] = ()
) -> Any:
    """An ASGI 3 app answering each HTTP request with ``await handle(path)``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, ctype, body = await handle(scope.get("path", ""))
        await respond(send, status, body, ctype.encode(), headers)

    return app
