"""``EtcdTrust``: a cluster's CA bundle in etcd, followed by every node's cert manager.

Layout: ``/ergo/CLUSTER/trust`` holds one PEM bundle (no lease: it outlives
the nodes). ``publish_trust`` (or ``EtcdTrust.publish``) puts it; a follower
reads the key at ``start`` and then watches it (the watch and the HTTP
requests are ``EtcdClient``'s, shared with ``EtcdRegistrar``). Each new
bundle is checked, then set as both the client CAs and the root CAs of the
node's ``gen.CertAuthManager``; the next handshake uses it, connections that
are up keep theirs.

A bundle is refused, with a WARNING that says why, and the node keeps its
current pools when it is empty, does not parse, would strand the node's own
certificate (no certificate in the bundle issued the node's leaf or one of
its chain certificates, nor is one of them: peers verifying the node with
the new pool would refuse it), or cannot be loaded into a TLS context. A
deleted key changes nothing (logged at INFO).

``EtcdRegistrar(..., trust=cam)`` starts a follower with the node's registrar
and closes it with the node; see ``docs/etcd.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from ergo_py.gen.cert import Certificate, CertPool
from ergo_py.gen.certmanager import CertAuthManager
from ergo_py.gen.errors import CertificateError, ErgoError, ErrIncorrect
from ergo_py.net.loop import cancel_and_wait
from ergo_py.net.registrar.etcd_client import (
    DEFAULT_ENDPOINTS,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_BACKOFF,
    EtcdClient,
    b64,
    check_cluster,
    unb64,
)

__all__ = ["EtcdTrust", "check_trust_bundle", "publish_trust"]

log = logging.getLogger(__name__)

_BACKOFF_CAP: Final = MAX_BACKOFF


def _anchored(cert: Certificate, pool: CertPool) -> bool:
    """True if ``pool`` holds a certificate of ``cert``'s chain or the issuer of one.

    The issuer check is by subject name and by signature
    (``verify_directly_issued_by``): a CA that merely shares the name does not count.
    """
    cas = pool.certificates
    for member in cert.chain:
        if member in pool:
            return True
        for ca in cas:
            if ca.subject != member.issuer:
                continue
            try:
                member.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return True
    return False


def check_trust_bundle(pem: bytes | str, cert: Certificate | None = None) -> CertPool:
    """The pool a published bundle stands for; ``gen.CertificateError`` saying why not.

    Refused: an empty bundle, one that does not parse, and (given the node's
    ``cert``) one that would strand it: no issuer of its chain in the pool.
    """
    text = pem.decode("utf-8", "replace") if isinstance(pem, bytes | bytearray) else str(pem)
    if not text.strip():
        raise CertificateError("the bundle is empty")
    try:
        pool = CertPool.from_pem(text)
    except CertificateError as exc:
        raise CertificateError(f"the bundle does not parse ({exc})") from exc
    if cert is not None and not _anchored(cert, pool):
        raise CertificateError(
            "it would strand this node's certificate: no issuer "
            f"{cert.leaf.issuer.rfc4514_string()!r} of it (subject {cert.subject!r}) "
            f"among the bundle's {len(pool)} certificate(s)"
        )
    return pool


def _pem_of(pool: CertPool | bytes | str) -> str:
    if isinstance(pool, CertPool):
        if len(pool) == 0:
            raise ErrIncorrect("refusing to publish an empty CA pool")
        return pool.to_pem()
    try:
        return check_trust_bundle(pool).to_pem()
    except CertificateError as exc:
        raise ErrIncorrect(f"refusing to publish: {exc}") from exc


class EtcdTrust(EtcdClient):
    """Follows ``/ergo/CLUSTER/trust`` into a ``gen.CertAuthManager`` (``start``), or publishes it.

    One follower serves one node. ``start(cam)`` reads the key (applying a
    bundle that is there) and watches it until ``close``; etcd lost while
    running is retried with backoff, and the key is read again on return.
    Runs on the node's event loop; setting the pools builds the new TLS
    contexts there (a few milliseconds per change).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str = DEFAULT_ENDPOINTS,
        cluster: str = "default",
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(endpoints, request_timeout)
        self.cluster = check_cluster(cluster)
        self.key = f"/ergo/{cluster}/trust"
        self._cam: CertAuthManager | None = None
        self._revision = 0  # the etcd revision of the key's value last looked at
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"EtcdTrust(endpoints={self.endpoints!r}, cluster={self.cluster!r})"

    # --- publishing -------------------------------------------------------------------------

    async def publish(self, pool: CertPool | bytes | str) -> int:
        """Put ``pool`` (a ``CertPool`` or a PEM bundle) as the cluster's trust; its revision.

        ``gen.ErrIncorrect`` for an empty or unparsable bundle (nothing is put);
        ``gen.ErrNoConnection`` if etcd cannot be reached.
        """
        self._check_open()
        pem = _pem_of(pool)
        reply = await self._post("/v3/kv/put", {"key": b64(self.key), "value": b64(pem)})
        return int(reply.get("header", {}).get("revision", 0))

    async def read(self) -> CertPool | None:
        """The published pool (None if nothing is); ``CertificateError`` if unreadable."""
        self._check_open()
        reply = await self._post("/v3/kv/range", {"key": b64(self.key)})
        kvs = reply.get("kvs") or []
        return check_trust_bundle(unb64(kvs[0].get("value", ""))) if kvs else None

    # --- following ------------------------------------------------------------------------

    async def start(self, cam: CertAuthManager) -> None:
        """Apply the published bundle (if any) to ``cam``, then follow the key until ``close``.

        If etcd cannot be reached for the first read, that is logged and the
        follower reads the key as soon as etcd answers.
        """
        self._check_open()
        if not isinstance(cam, CertAuthManager):
            raise ErrIncorrect(
                f"EtcdTrust follows into a gen.CertAuthManager, not {type(cam).__name__}"
            )
        if self._cam is not None:
            raise ErrIncorrect("EtcdTrust already started")
        self._cam = cam
        try:
            await self._load()
        except ErgoError as exc:
            log.warning(
                "etcd trust: cannot read %s now (%s); following it once etcd answers",
                self.key,
                exc,
            )
        self._task = asyncio.get_running_loop().create_task(
            self._follow(
                self.key,
                self._load,
                b64(self.key),
                None,
                lambda: self._revision,
                self._on_event,
                _BACKOFF_CAP,
            ),
            name=f"etcd trust {self.key}",
        )

    async def close(self) -> None:
        """Stop following (the cert manager keeps what it has); idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._close_client()

    async def _load(self) -> None:
        reply = await self._post("/v3/kv/range", {"key": b64(self.key)})
        kvs = reply.get("kvs") or []
        if kvs:
            revision = int(kvs[0].get("mod_revision", 0))
            if revision > self._revision:
                self._offer(kvs[0].get("value", ""), revision)
        self._revision = max(self._revision, int(reply.get("header", {}).get("revision", 0)))

    def _on_event(self, event: dict[str, Any]) -> None:
        kv = event.get("kv", {})
        revision = int(kv.get("mod_revision", 0))
        if revision <= self._revision:
            return
        if event.get("type", "PUT") == "PUT":
            self._offer(kv.get("value", ""), revision)
        else:
            log.info("etcd trust: %s deleted; keeping the current CA pools", self.key)
        self._revision = revision

    def _offer(self, value_b64: str, revision: int) -> bool:
        """Check a published bundle and set it on the cert manager; False if refused."""
        cam = self._cam
        assert cam is not None
        try:
            pem = unb64(value_b64)
        except ValueError:
            pem = "\0"  # not text: does not parse
        try:
            pool = check_trust_bundle(pem, cam.get_certificate())
            if pool == cam.client_cas() and pool == cam.root_cas():
                log.debug("etcd trust: %s revision %d is in force already", self.key, revision)
                return True
            old_client = cam.client_cas()
            cam.set_client_cas(pool)
            try:
                cam.set_root_cas(pool)
            except CertificateError:
                with contextlib.suppress(CertificateError):
                    cam.set_client_cas(old_client)
                raise
        except CertificateError as exc:
            log.warning(
                "etcd trust: refused the CA bundle at %s (revision %d): %s; "
                "keeping the current CA pools",
                self.key,
                revision,
                exc,
            )
            return False
        log.info(
            "etcd trust: CA pools set from %s (revision %d): %s",
            self.key,
            revision,
            ", ".join(c.subject.rfc4514_string() for c in pool.certificates),
        )
        return True


def publish_trust(
    endpoints: Sequence[str] | str,
    cluster: str,
    pool: CertPool | bytes | str,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> int:
    """Put ``pool`` as cluster ``cluster``'s trust in etcd (blocking); the etcd revision.

    Every node following the cluster's trust sets it as its client and root
    CAs. From a coroutine use ``await EtcdTrust(endpoints, cluster).publish(pool)``.
    """

    async def put() -> int:
        trust = EtcdTrust(endpoints, cluster, request_timeout=request_timeout)
        try:
            return await trust.publish(pool)
        finally:
            await trust.close()

    return asyncio.run(put())
