"""Warm registry: which nodes hold an enrolled speaker or a cached voice (platform §6.7).

An entry ``node_id → "{node started_at}:{stored_at ms}"`` counts only while the node's current
``started_at`` equals the stored one, so a restarted node is never assumed to hold anything.
Failed evictions go to ``scai:{module}:evict_pending``; :meth:`WarmRegistry.reconcile` retries
them. The set members carry no time, so the first failure time of each member is kept beside
it in the hash ``scai:{module}:evict_pending:since``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog

from scaicommon.nodes import NodeInfo, NodeRegistry

log = structlog.get_logger("scaicommon.warm")

PENDING_MAX_AGE_S = 30 * 86400

#: ``evict(node, kind, tenant_id, item_id)``: ``True``/``False`` is a definite answer
#: (evicted or not held); raising or returning ``None`` keeps the entry pending.
EvictCall = Callable[[NodeInfo, str, str, str], Awaitable[bool | None]]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class PendingEviction:
    """One member of the evict-pending set."""

    kind: str
    tenant_id: str
    item_id: str
    node_id: str

    @property
    def member(self) -> str:
        """``"{kind}:{tenant_id}:{id}:{node_id}"``."""
        return f"{self.kind}:{self.tenant_id}:{self.item_id}:{self.node_id}"

    @classmethod
    def parse(cls, member: str) -> PendingEviction | None:
        """Parse a set member; ``None`` when it is malformed."""
        parts = member.split(":")
        if len(parts) != 4 or not all(parts):
            return None
        return cls(*parts)


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconciler run did."""

    resolved: int = 0
    kept: int = 0
    dropped: int = 0


class WarmRegistry:
    """The warm hashes and evict-pending set of one module (``kind`` = ``speaker``/``voice``)."""

    def __init__(self, redis: aioredis.Redis, module: str, *, ttl_s: float = 86400.0) -> None:
        self.redis = redis
        self.module = module
        self.ttl_s = max(1, int(ttl_s))

    def key(self, kind: str, tenant_id: str, item_id: str) -> str:
        """``scai:{module}:warm:{kind}:{tenant_id}:{id}``."""
        return f"scai:{self.module}:warm:{kind}:{tenant_id}:{item_id}"

    @property
    def pending_key(self) -> str:
        """``scai:{module}:evict_pending``."""
        return f"scai:{self.module}:evict_pending"

    @property
    def pending_since_key(self) -> str:
        """Companion hash: pending member → first failure, epoch ms."""
        return f"scai:{self.module}:evict_pending:since"

    async def record(
        self,
        kind: str,
        tenant_id: str,
        item_id: str,
        node: NodeInfo,
        *,
        at_ms: int | None = None,
    ) -> None:
        """Note that ``node`` now holds the item (after a successful enrol/cache)."""
        at = at_ms if at_ms is not None else int(time.time() * 1000)
        key = self.key(kind, tenant_id, item_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, node.node_id, f"{node.started_at}:{at}")
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def entries(self, kind: str, tenant_id: str, item_id: str) -> dict[str, tuple[int, int]]:
        """Raw entries: node id → ``(started_at, stored_at_ms)``."""
        raw = await self.redis.hgetall(self.key(kind, tenant_id, item_id))  # type: ignore[misc]
        out: dict[str, tuple[int, int]] = {}
        for node_id, value in raw.items():
            started, _, stored = _s(value).partition(":")
            try:
                out[_s(node_id)] = (int(started), int(stored or 0))
            except ValueError:
                continue
        return out

    async def holders(
        self,
        kind: str,
        tenant_id: str,
        item_id: str,
        nodes: Mapping[str, NodeInfo] | None = None,
        *,
        registry: NodeRegistry | None = None,
    ) -> list[str]:
        """Node ids whose entry is fresh (stored ``started_at`` equals the node's current one).

        ``nodes`` maps node id → current :class:`NodeInfo`; without it ``registry`` is read.
        Refreshes the hash TTL (use).
        """
        if nodes is None:
            if registry is None:
                raise ValueError("give nodes or registry")
            nodes = {n.node_id: n for n in await registry.read()}
        key = self.key(kind, tenant_id, item_id)
        entries = await self.entries(kind, tenant_id, item_id)
        if entries:
            await self.redis.expire(key, self.ttl_s)
        return sorted(
            node_id
            for node_id, (started, _) in entries.items()
            if node_id in nodes and nodes[node_id].started_at == started
        )

    async def forget(self, kind: str, tenant_id: str, item_id: str, node_id: str) -> None:
        """Drop one node's entry (it answered that it does not hold the item)."""
        await self.redis.hdel(self.key(kind, tenant_id, item_id), node_id)  # type: ignore[misc]

    async def clear(self, kind: str, tenant_id: str, item_id: str) -> list[str]:
        """Delete the hash (always, even if evictions later fail); return its node ids."""
        key = self.key(kind, tenant_id, item_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hkeys(key)
            pipe.delete(key)
            names, _ = await pipe.execute()
        return sorted(_s(n) for n in names)

    async def add_pending(self, kind: str, tenant_id: str, item_id: str, node_id: str) -> None:
        """Queue an eviction that failed on ``node_id`` for the reconciler."""
        member = PendingEviction(kind, tenant_id, item_id, node_id).member
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.pending_key, member)
            pipe.hsetnx(self.pending_since_key, member, str(int(time.time() * 1000)))
            await pipe.execute()

    async def pending(self) -> list[PendingEviction]:
        """Every parseable pending eviction, sorted by member."""
        members = await self.redis.smembers(self.pending_key)  # type: ignore[misc]
        parsed = (PendingEviction.parse(_s(m)) for m in members)
        return sorted((p for p in parsed if p is not None), key=lambda p: p.member)

    async def remove_pending(self, entry: PendingEviction) -> None:
        """Drop one pending eviction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.pending_key, entry.member)
            pipe.hdel(self.pending_since_key, entry.member)
            await pipe.execute()

    async def reconcile(
        self,
        registry: NodeRegistry,
        evict: EvictCall,
        *,
        max_age_s: float = PENDING_MAX_AGE_S,
        now_ms: int | None = None,
    ) -> ReconcileReport:
        """One reconciler run (the 60 s cron of §6.7).

        Each pending eviction whose node is known and not stale is retried with ``evict``;
        a definite answer (``True``/``False``) removes the entry. Entries older than
        ``max_age_s`` are dropped with a warning.
        """
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        nodes = {n.node_id: n for n in await registry.read()}
        since_raw = await self.redis.hgetall(self.pending_since_key)  # type: ignore[misc]
        since = {_s(k): int(_s(v)) for k, v in since_raw.items() if _s(v).isdigit()}
        resolved = kept = dropped = 0
        for entry in await self.pending():
            first = since.get(entry.member, now)
            if now - first > max_age_s * 1000:
                log.warning(
                    "evict_pending_dropped",
                    kind=entry.kind,
                    node_id=entry.node_id,
                    item_id=entry.item_id,
                )
                await self.remove_pending(entry)
                dropped += 1
                continue
            node = nodes.get(entry.node_id)
            if node is None or node.health == "stale":
                kept += 1
                continue
            try:
                answer = await evict(node, entry.kind, entry.tenant_id, entry.item_id)
            except Exception as exc:
                log.info(
                    "evict_pending_retry_failed", node_id=node.node_id, error=type(exc).__name__
                )
                answer = None
            if answer is None:
                kept += 1
                continue
            await self.remove_pending(entry)
            resolved += 1
        return ReconcileReport(resolved=resolved, kept=kept, dropped=dropped)
