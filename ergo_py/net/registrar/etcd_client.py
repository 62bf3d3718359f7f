"""``EtcdClient``: what the etcd registrar and the etcd trust bundle share.

Both talk to etcd's v3 JSON gRPC gateway (``/v3/...``) over HTTP with
``httpx`` (``docs/etcd.md`` says why): the endpoints, one client, requests
with failover between endpoints, and watches. Its own module so that the
registrar can start an ``EtcdTrust`` and the trust bundle can use the
client without the two importing each other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoConnection,
    ErrNodeTerminated,
    ErrUnsupported,
)
from ergo_py.net.retry import Backoff

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_ENDPOINTS", "DEFAULT_REQUEST_TIMEOUT", "EtcdClient", "EtcdError"]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS: Final = ("http://127.0.0.1:2379",)
DEFAULT_REQUEST_TIMEOUT: Final = 2.0
FIRST_BACKOFF: Final = 0.1
MAX_BACKOFF: Final = 5.0


class EtcdError(ErgoError):
    """Etcd answered with an error (not a lost connection: that is ``gen.ErrNoConnection``)."""


def b64(data: str) -> str:
    return base64.b64encode(data.encode("utf-8")).decode("ascii")


def unb64(data: str) -> str:
    return base64.b64decode(data).decode("utf-8")


def prefix_end(prefix: str) -> str:
    """The range end covering every key that starts with ``prefix``."""
    raw = prefix.encode("utf-8")
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode("ascii")


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise ErrUnsupported("net.EtcdRegistrar needs httpx: pip install 'ergo-py[etcd]'") from None
    return httpx


def check_endpoints(endpoints: Sequence[str] | str) -> list[str]:
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    endpoints = [e.rstrip("/") for e in endpoints]
    if not endpoints or not all(e.startswith(("http://", "https://")) for e in endpoints):
        raise ErrIncorrect(f"etcd endpoints must be http(s) URLs, got {endpoints!r}")
    return endpoints


def check_cluster(cluster: str) -> str:
    if not cluster or "/" in cluster:
        raise ErrIncorrect(f"etcd cluster name must be non-empty without '/': {cluster!r}")
    return cluster


class EtcdClient:
    """What every etcd user here shares: the endpoints, one ``httpx`` client, requests, watches.

    ``_post`` fails over between the endpoints; ``_watch_events`` streams one
    key range's events; ``_follow`` keeps a local view of a range fresh (load,
    then watch, again with backoff after any interruption). Not public API:
    ``EtcdRegistrar`` and ``EtcdTrust`` are built on it.
    """

    def __init__(self, endpoints: Sequence[str] | str, request_timeout: float) -> None:
        endpoints = check_endpoints(endpoints)
        if not request_timeout > 0:
            raise ErrIncorrect(f"request_timeout must be > 0, got {request_timeout!r}")
        _httpx()  # fail here, not in the node, when the extra is missing
        self.endpoints: list[str] = endpoints
        self.request_timeout = request_timeout
        self._endpoint = 0  # the one that answered last
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    async def _follow(
        self,
        what: str,
        load: Callable[[], Awaitable[None]],
        key: str,
        range_end: str | None,
        revision: Callable[[], int],
        apply: Callable[[dict[str, Any]], None],
        backoff_cap: float,
    ) -> None:
        """Forever: ``load()`` the range, then ``apply`` each watched event after ``revision()``.

        Any interruption (etcd lost, the watch canceled or compacted) is
        logged at DEBUG and retried with backoff (0.1 s doubling up to
        ``backoff_cap``), starting again with ``load``.
        """
        backoff = Backoff(FIRST_BACKOFF, backoff_cap)
        while True:
            try:
                await load()
                backoff.reset()
                async for event in self._watch_events(key, range_end, revision() + 1):
                    apply(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("etcd: watch of %s interrupted: %s", what, exc)
            await asyncio.sleep(backoff.next())

    async def _watch_events(
        self, key: str, range_end: str | None, start_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of ``key`` (base64; up to ``range_end`` if given) from ``start_revision`` on.

        Runs until the stream ends; ``EtcdError`` when etcd cancels it.
        """
        httpx = _httpx()
        create: dict[str, Any] = {"key": key, "start_revision": str(start_revision)}
        if range_end is not None:
            create["range_end"] = range_end
        client = self._get_client()
        url = self.endpoints[self._endpoint] + "/v3/watch"
        timeout = httpx.Timeout(self.request_timeout, read=None)
        async with client.stream(
            "POST", url, json={"create_request": create}, timeout=timeout
        ) as response:
            if response.status_code != 200:
                raise EtcdError(f"watch refused: HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                message = json.loads(line)
                result = message.get("result")
                if result is None:
                    raise EtcdError(f"watch ended: {message.get('error', message)}")
                if result.get("canceled") or result.get("compact_revision"):
                    raise EtcdError(f"watch canceled: {result.get('cancel_reason', 'compacted')}")
                for event in result.get("events") or []:
                    yield event

    # --- HTTP -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ErrNodeTerminated(f"{type(self).__name__} is closed")

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            httpx = _httpx()
            self._client = httpx.AsyncClient(timeout=self.request_timeout)
        return self._client

    async def _close_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _post(self, path: str, body: dict[str, Any], *, closing: bool = False) -> Any:
        """POST ``body`` to the first endpoint that answers, starting with the last good one.

        ``gen.ErrNoConnection`` if none answered within ``request_timeout`` each;
        ``EtcdError`` for an error reply.
        """
        if self._closed and not closing:
            raise ErrNodeTerminated(f"{type(self).__name__} is closed")
        httpx = _httpx()
        client = self._get_client()
        errors: list[str] = []
        for i in range(len(self.endpoints)):
            index = (self._endpoint + i) % len(self.endpoints)
            url = self.endpoints[index] + path
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as exc:
                errors.append(f"{self.endpoints[index]}: {type(exc).__name__} {exc}".strip())
                continue
            self._endpoint = index
            try:
                reply = response.json()
            except ValueError:
                raise EtcdError(f"{path}: HTTP {response.status_code}, not JSON") from None
            if response.status_code != 200:
                message = reply.get("error") or reply.get("message") or reply
                raise EtcdError(f"{path}: HTTP {response.status_code}: {message}")
            return reply
        raise ErrNoConnection("; ".join(errors))
