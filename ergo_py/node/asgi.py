"""The node's own small ASGI apps (``/metrics``, the observer page): one shell for them.

Each app is a function from the request path to ``(status, content type,
body)``; the shell answers ASGI's lifespan messages and sends the response.
Served by ``meta.WebServer``, which the node does not import: it gets the
app and hands it over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Reply = tuple[int, str, bytes]
PLAIN = "text/plain; charset=utf-8"
NOT_FOUND: Reply = (404, PLAIN, b"not found\n")


def path_app(
    handle: Callable[[str], Awaitable[Reply]], headers: Sequence[tuple[bytes, bytes]] = ()
) -> Any:
    """An ASGI 3 app answering each HTTP request with ``await handle(path)``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, ctype, body = await handle(scope.get("path", ""))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app
