"""``EtcdRegistrar``: multi-host discovery on etcd (the ``net.Registrar`` protocol).

Layout in etcd, one cluster per prefix::

    /ergo/CLUSTER/nodes/NAME  ->  {"routes": [...], "instance": "..."}   (under a lease)

``start`` grants a lease of ``lease_ttl`` seconds and creates the node's key
under it (a transaction: an existing key means the name is taken). A
keep-alive task owned by the registrar refreshes the lease every third of its
TTL; ``close`` ends the task and revokes the lease, which deletes the key at
once. A node that dies without a goodbye disappears when its lease expires.

``nodes`` is a snapshot of a local cache of the prefix, kept fresh by a watch;
``resolve`` reads etcd and falls back to the cache when etcd cannot be reached.

Etcd unreachable at ``start``: ``gen.NodeError`` (the node does not start).
Etcd lost while running: the cache is kept, the keep-alive and the watch
retry with backoff, and the node registers again (with a new lease if its old
one is gone) once etcd is back; each loss and recovery is logged once.

The client is etcd's v3 JSON gRPC gateway (``/v3/...``) over HTTP with
``httpx`` (``pip install ergo-py[etcd]``); ``docs/etcd.md`` says why.

Everything runs on the node's event loop, except ``nodes``, which may be
called from any thread. The registrar pickles by its settings: the copy is a
fresh, unstarted registrar (so process nodes can be given one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from ergo_py.gen.certmanager import CertAuthManager
from ergo_py.gen.errors import (
    ErgoError,
    ErrIncorrect,
    ErrNoConnection,
    ErrNoRoute,
    ErrTaken,
    NodeError,
)
from ergo_py.gen.registrar import Route
from ergo_py.net.loop import cancel_and_wait
from ergo_py.net.registrar.etcd_client import (
    DEFAULT_ENDPOINTS,
    DEFAULT_REQUEST_TIMEOUT,
    FIRST_BACKOFF,
    MAX_BACKOFF,
    EtcdClient,
    EtcdError,
    b64,
    check_cluster,
    prefix_end,
    unb64,
)
from ergo_py.net.registrar.etcd_trust import EtcdTrust
from ergo_py.net.retry import Backoff

__all__ = ["DEFAULT_ENDPOINTS", "EtcdError", "EtcdRegistrar"]

log = logging.getLogger(__name__)


def _encode_routes(routes: Sequence[Route], instance: str) -> str:
    return json.dumps(
        {
            "routes": [
                {
                    "host": r.host,
                    "port": r.port,
                    "tls": r.tls,
                    "handshake_version": r.handshake_version,
                    "proto_version": r.proto_version,
                }
                for r in routes
            ],
            "instance": instance,
        }
    )


def _decode_value(value_b64: str) -> tuple[list[Route], str]:
    """A key's routes and instance; ``EtcdError`` if it is not ours to read."""
    try:
        value = json.loads(unb64(value_b64))
        routes = [Route(**r) for r in value["routes"]]
        return routes, str(value.get("instance", ""))
    except (ValueError, KeyError, TypeError, ErgoError) as exc:
        raise EtcdError(f"unreadable registration in etcd: {exc}") from exc


def _restore(settings: dict[str, Any]) -> EtcdRegistrar:
    return EtcdRegistrar(**settings)


class EtcdRegistrar(EtcdClient):
    """A ``net.Registrar`` on etcd: ``endpoints`` are its client URLs, tried in turn.

    ``cluster`` names the key prefix (``/ergo/CLUSTER/``): nodes see only
    their own cluster. ``lease_ttl`` (seconds, an int >= 1) bounds how long a
    node that died without a goodbye stays listed. ``request_timeout`` bounds
    every request to one endpoint.

    ``trust``: follow the cluster's CA bundle (``/ergo/CLUSTER/trust``, see
    ``net.EtcdTrust``) into the node's ``gen.CertAuthManager`` from ``start``
    until ``close``. Pass the manager itself (the one in
    ``NodeOptions.cert_manager``), or ``True`` and bind it later with
    ``bind_cert_manager`` (a pickled copy carries ``True``: ``testing``'s
    process nodes bind it to the child's manager). A node that never starts
    its registrar (a hidden node) does not follow.
    """

    def __init__(
        self,
        endpoints: Sequence[str] = DEFAULT_ENDPOINTS,
        cluster: str = "default",
        lease_ttl: int = 10,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        trust: CertAuthManager | bool = False,
    ) -> None:
        check_cluster(cluster)
        if not isinstance(trust, bool | CertAuthManager):
            raise ErrIncorrect(f"trust must be a gen.CertAuthManager or a bool, got {trust!r}")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int) or lease_ttl < 1:
            raise ErrIncorrect(f"lease_ttl must be an int >= 1 (seconds), got {lease_ttl!r}")
        super().__init__(endpoints, request_timeout)
        self.cluster = cluster
        self.lease_ttl = lease_ttl
        self.prefix = f"/ergo/{cluster}/nodes/"
        self._instance = uuid.uuid4().hex
        self._lock = threading.Lock()  # guards _cache for nodes() from any thread
        self._cache: dict[str, list[Route]] = {}
        self._revision = 0  # the etcd revision the cache reflects (watch/range)
        self._name: str | None = None
        self._routes: list[Route] = []
        self._lease: int | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.trust = bool(trust)
        self._trust_cam: CertAuthManager | None = (
            trust if isinstance(trust, CertAuthManager) else None
        )
        self._trust: EtcdTrust | None = None

    # --- pickling: by settings, unstarted -------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        settings = {
            "endpoints": list(self.endpoints),
            "cluster": self.cluster,
            "lease_ttl": self.lease_ttl,
            "request_timeout": self.request_timeout,
            "trust": self.trust,
        }
        return (_restore, (settings,))

    def bind_cert_manager(self, cam: CertAuthManager) -> None:
        """The manager a registrar made with ``trust=True`` follows the cluster's trust into.

        Call before the node starts; a registrar without ``trust`` ignores it.
        """
        if not isinstance(cam, CertAuthManager):
            raise ErrIncorrect(f"trust follows into a gen.CertAuthManager, not {cam!r}")
        if self.trust:
            self._trust_cam = cam

    def __repr__(self) -> str:
        return (
            f"EtcdRegistrar(endpoints={self.endpoints!r}, cluster={self.cluster!r}, "
            f"lease_ttl={self.lease_ttl}, trust={self.trust})"
        )

    # --- the protocol ---------------------------------------------------------------------

    async def start(self, node_name: str, routes: Sequence[Route]) -> None:
        """Register ``node_name`` under a lease; ``gen.NodeError`` if etcd is unreachable."""
        self._check_open()
        if self._name is not None:
            raise ErrIncorrect(f"registrar already started for {self._name}")
        if self.trust and self._trust_cam is None:
            raise NodeError(
                "EtcdRegistrar(trust=True) has no cert manager to follow the cluster's trust "
                "into: pass trust=cam, or call bind_cert_manager(cam) before the node starts"
            )
        try:
            await self._register(node_name, list(routes), taken_ok=False)
        except ErrNoConnection as exc:
            raise NodeError(
                f"etcd unreachable at {', '.join(self.endpoints)}: cannot register {node_name} "
                f"({exc})"
            ) from exc
        self._name = node_name
        self._routes = list(routes)
        with self._lock:
            self._cache[node_name] = list(routes)
        self._keepalive_task = asyncio.get_running_loop().create_task(
            self._keepalive_loop(), name=f"etcd keepalive {node_name}"
        )
        self._ensure_watch()
        if self._trust_cam is not None:
            self._trust = EtcdTrust(
                self.endpoints, self.cluster, request_timeout=self.request_timeout
            )
            await self._trust.start(self._trust_cam)

    async def resolve(self, node_name: str) -> list[Route]:
        """Routes from etcd; the cached ones when etcd cannot be reached."""
        self._check_open()
        self._ensure_watch()
        try:
            reply = await self._post("/v3/kv/range", {"key": b64(self.prefix + node_name)})
        except ErrNoConnection:
            with self._lock:
                cached = self._cache.get(node_name)
            if cached is not None:
                return list(cached)
            raise
        revision = int(reply.get("header", {}).get("revision", 0))
        kvs = reply.get("kvs") or []
        routes = _decode_value(kvs[0]["value"])[0] if kvs else None
        with self._lock:
            if revision > self._revision:  # not older than what the watch applied
                if routes is None:
                    self._cache.pop(node_name, None)
                else:
                    self._cache[node_name] = list(routes)
        if routes is None:
            raise ErrNoRoute(node_name)
        return routes

    def nodes(self) -> list[str]:
        with self._lock:
            return sorted(self._cache)

    async def close(self) -> None:
        """Stop the keep-alive and the watch, revoke the lease (deleting the key); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._trust is not None:
            await self._trust.close()
        await cancel_and_wait(self._keepalive_task, self._watch_task)
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(ErgoError):
                await self._post("/v3/lease/revoke", {"ID": str(lease)}, closing=True)
        await self._close_client()

    # --- registration and keep-alive ------------------------------------------------------

    async def _register(self, name: str, routes: list[Route], *, taken_ok: bool) -> None:
        """Grant a lease and create the key under it.

        ``taken_ok``: the key may exist if it is this registrar's (a re-registration);
        otherwise an existing key is ``gen.ErrTaken``.
        """
        grant = await self._post("/v3/lease/grant", {"TTL": str(self.lease_ttl)})
        if grant.get("error"):
            raise EtcdError(f"lease grant refused: {grant['error']}")
        lease = int(grant["ID"])
        key = b64(self.prefix + name)
        value = b64(_encode_routes(routes, self._instance))
        put = {"request_put": {"key": key, "value": value, "lease": str(lease)}}
        reply = await self._post(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                ],
                "success": [put],
                "failure": [{"request_range": {"key": key}}],
            },
        )
        if not reply.get("succeeded"):
            kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
            holder = _decode_value(kvs[0]["value"])[1] if kvs else None
            if not (taken_ok and holder == self._instance):
                with contextlib.suppress(ErgoError):
                    await self._post("/v3/lease/revoke", {"ID": str(lease)})
                raise ErrTaken(f"{name} is registered in etcd cluster {self.cluster!r}")
            await self._post("/v3/kv/put", put["request_put"])
        old, self._lease = self._lease, lease
        if old is not None and old != lease:
            with contextlib.suppress(ErgoError):
                await self._post("/v3/lease/revoke", {"ID": str(old)})

    async def _keepalive_loop(self) -> None:
        """Refresh the lease every TTL/3; when etcd is lost, retry with backoff and re-register."""
        assert self._name is not None
        interval = self.lease_ttl / 3
        backoff = Backoff(FIRST_BACKOFF, self._backoff_cap())
        lost_since: float | None = None
        loop = asyncio.get_running_loop()
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                alive = await self._keepalive_once()
                if not alive:
                    log.warning(
                        "etcd: lease of %s expired; registering again with a new lease", self._name
                    )
                    await self._register(self._name, self._routes, taken_ok=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if lost_since is None:
                    lost_since = loop.time()
                    log.warning(
                        "etcd: %s lost (%s); keeping cached routes, retrying", self._name, exc
                    )
                delay = backoff.next()
                continue
            if lost_since is not None:
                log.warning(
                    "etcd: back after %.1f s; %s is registered again",
                    loop.time() - lost_since,
                    self._name,
                )
                lost_since = None
            backoff.reset()
            delay = interval

    async def _keepalive_once(self) -> bool:
        """Refresh the lease; False if etcd no longer knows it (it expired meanwhile)."""
        if self._lease is None:
            return False
        reply = await self._post("/v3/lease/keepalive", {"ID": str(self._lease)})
        result = reply.get("result", reply)
        return int(result.get("TTL", 0) or 0) > 0

    # --- the watch: the cache behind nodes() ----------------------------------------------

    def _ensure_watch(self) -> None:
        if self._watch_task is None and not self._closed:
            self._watch_task = asyncio.get_running_loop().create_task(
                self._watch_loop(), name=f"etcd watch {self.prefix}"
            )

    async def _watch_loop(self) -> None:
        await self._follow(
            self.prefix,
            self._load_prefix,
            b64(self.prefix),
            prefix_end(self.prefix),
            lambda: self._revision,
            self._apply,
            self._backoff_cap(),
        )

    def _backoff_cap(self) -> float:
        """Retry at least twice within a lease's TTL, at most every ``MAX_BACKOFF`` s."""
        return min(MAX_BACKOFF, max(0.5, self.lease_ttl / 2))

    async def _load_prefix(self) -> None:
        reply = await self._post(
            "/v3/kv/range", {"key": b64(self.prefix), "range_end": prefix_end(self.prefix)}
        )
        cache: dict[str, list[Route]] = {}
        for kv in reply.get("kvs") or []:
            name = unb64(kv["key"])[len(self.prefix) :]
            with contextlib.suppress(EtcdError):
                cache[name] = _decode_value(kv["value"])[0]
        with self._lock:
            self._cache = cache
            self._revision = int(reply.get("header", {}).get("revision", 0))

    def _apply(self, event: dict[str, Any]) -> None:
        kv = event.get("kv", {})
        name = unb64(kv.get("key", ""))[len(self.prefix) :]
        revision = int(kv.get("mod_revision", 0))
        routes: list[Route] | None = None
        if event.get("type", "PUT") == "PUT":
            try:
                routes = _decode_value(kv.get("value", ""))[0]
            except EtcdError:
                return
        with self._lock:
            if routes is None:
                self._cache.pop(name, None)
            else:
                self._cache[name] = routes
            self._revision = max(self._revision, revision)
