"""Inference-node registry: the Redis view of the nodes and the node resolver (platform §6).

The poller (:mod:`scaicommon.nodepoller`) writes the registry; every process reads it fresh
from Redis on each call. This module holds the key layout, :class:`NodeInfo`, the health tiers
(§6.4), :meth:`NodeRegistry.resolve_audio_node` (§6.5), the operator listing (§6.8) and the
``scaiinfer`` readiness value (§12.1).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from scaicommon.timefmt import format_ts

log = structlog.get_logger("scaicommon.nodes")

INDEX_KEY = "scai:nodes:index"
LEASE_KEY = "scai:nodes:poll_lease"
ENGINE_KINDS = ("audio.transcribe", "audio.synthesize", "audio.analyze.pyannote")

Health = Literal["healthy", "warning", "stale"]
HEALTHS: tuple[Health, ...] = ("healthy", "warning", "stale")
_TIE = 1e-9


def node_key(node_id: str) -> str:
    """``scai:nodes:node:{node_id}``: the node hash."""
    return f"scai:nodes:node:{node_id}"


def endpoint_key(endpoint: str) -> str:
    """``scai:nodes:endpoint:{host:port}``: endpoint → node id."""
    return f"scai:nodes:endpoint:{endpoint}"


def unanswered_key(endpoint: str) -> str:
    """``scai:nodes:unanswered:{host:port}``: errors of an endpoint that never answered."""
    return f"scai:nodes:unanswered:{endpoint}"


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)


def health_tier(
    last_heartbeat_at: int | None, *, warn_after_s: float, stale_after_s: float, at_ms: int
) -> Health:
    """The tier of a node heard from at ``last_heartbeat_at`` (epoch ms), seen at ``at_ms``."""
    if last_heartbeat_at is None:
        return "stale"
    age_s = (at_ms - last_heartbeat_at) / 1000.0
    if age_s <= warn_after_s:
        return "healthy"
    if age_s <= stale_after_s:
        return "warning"
    return "stale"


@dataclass(frozen=True)
class EngineInfo:
    """One engine of a node, as ``GetNodeInfo`` reported it."""

    kind: str
    name: str
    model: str
    capabilities: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    inflight: int = 0
    capacity: int = 0
    builtin_voices: tuple[str, ...] = ()
    output_sample_rate_hz: int = 0
    embedding_dims: int = 0

    def to_json(self) -> dict[str, Any]:
        """The object stored in the hash's ``engines`` list (§6.3)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "model": self.model,
            "capabilities": list(self.capabilities),
            "languages": list(self.languages),
            "inflight": self.inflight,
            "capacity": self.capacity,
            "builtin_voices": list(self.builtin_voices),
            "output_sample_rate_hz": self.output_sample_rate_hz,
            "embedding_dims": self.embedding_dims,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineInfo:
        """Parse one entry of the stored ``engines`` list."""
        return cls(
            kind=str(data.get("kind", "")),
            name=str(data.get("name", "")),
            model=str(data.get("model", "")),
            capabilities=tuple(str(c) for c in data.get("capabilities") or ()),
            languages=tuple(str(c) for c in data.get("languages") or ()),
            inflight=int(data.get("inflight") or 0),
            capacity=int(data.get("capacity") or 0),
            builtin_voices=tuple(str(c) for c in data.get("builtin_voices") or ()),
            output_sample_rate_hz=int(data.get("output_sample_rate_hz") or 0),
            embedding_dims=int(data.get("embedding_dims") or 0),
        )


@dataclass(frozen=True)
class NodeInfo:
    """A node as the registry holds it: the hash fields of §6.3 plus the computed ``health``."""

    node_id: str
    endpoint: str
    version: str
    api_version: str
    engines: tuple[EngineInfo, ...]
    engine_kinds: tuple[str, ...]
    models_loaded: tuple[str, ...]
    inflight: int
    capacity: int
    load: float
    draining: bool
    started_at: int
    last_heartbeat_at: int | None
    last_error: str | None
    last_error_at: int | None
    first_seen_at: int | None
    health: Health

    def engine(self, kind: str) -> EngineInfo | None:
        """The node's engine of ``kind``, if it has one."""
        for engine in self.engines:
            if engine.kind == kind:
                return engine
        return None

    def has(self, kind: str, capabilities: Iterable[str] = ()) -> bool:
        """Whether the node has an engine of ``kind`` with every capability listed."""
        engine = self.engine(kind)
        return engine is not None and set(capabilities) <= set(engine.capabilities)

    def ratio(self, kind: str) -> float:
        """``inflight / capacity`` of the engine, else of the node, else ``inflight`` (§6.5)."""
        engine = self.engine(kind)
        if engine is not None and engine.capacity > 0:
            return engine.inflight / engine.capacity
        if self.capacity > 0:
            return self.inflight / self.capacity
        return float(self.inflight)

    @classmethod
    def from_hash(
        cls, fields: Mapping[str, str], *, warn_after_s: float, stale_after_s: float, at_ms: int
    ) -> NodeInfo | None:
        """Parse a node hash; ``None`` when it lacks ``node_id`` (expired or half-written)."""
        node_id = fields.get("node_id")
        if not node_id:
            return None
        try:
            engines = tuple(
                EngineInfo.from_json(e) for e in json.loads(fields.get("engines", "[]"))
            )
            models = tuple(str(m) for m in json.loads(fields.get("models_loaded", "[]")))
        except (ValueError, TypeError, AttributeError):
            engines, models = (), ()
        heartbeat = _int_or_none(fields.get("last_heartbeat_at"))
        kinds = fields.get("engine_kinds", "")
        return cls(
            node_id=node_id,
            endpoint=fields.get("endpoint", ""),
            version=fields.get("version", ""),
            api_version=fields.get("api_version", ""),
            engines=engines,
            engine_kinds=tuple(k for k in kinds.split(",") if k),
            models_loaded=models,
            inflight=_int_or_none(fields.get("inflight")) or 0,
            capacity=_int_or_none(fields.get("capacity")) or 0,
            load=_float(fields.get("load")),
            draining=fields.get("draining") == "1",
            started_at=_int_or_none(fields.get("started_at")) or 0,
            last_heartbeat_at=heartbeat,
            last_error=fields.get("last_error") or None,
            last_error_at=_int_or_none(fields.get("last_error_at")),
            first_seen_at=_int_or_none(fields.get("first_seen_at")),
            health=health_tier(
                heartbeat, warn_after_s=warn_after_s, stale_after_s=stale_after_s, at_ms=at_ms
            ),
        )

    def listing_item(self) -> dict[str, Any]:
        """The item of the operator listing (§6.8)."""
        return {
            "node_id": self.node_id,
            "endpoint": self.endpoint,
            "health": self.health,
            "last_heartbeat_at": _ts(self.last_heartbeat_at),
            "engines": [
                {"kind": e.kind, "name": e.name, "capabilities": list(e.capabilities)}
                for e in self.engines
            ],
            "models_loaded": list(self.models_loaded),
            "inflight": self.inflight,
            "capacity": self.capacity,
            "version": self.version,
            "load": self.load,
            "draining": self.draining,
            "last_error": self.last_error,
        }


def _int_or_none(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _float(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _ts(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return format_ts(datetime.fromtimestamp(epoch_ms / 1000.0, UTC))


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


def pick_least_loaded(
    nodes: Sequence[NodeInfo], engine_kind: str, *, rng: random.Random | None = None
) -> NodeInfo | None:
    """Lowest ``ratio`` for ``engine_kind``; ties (within 1e-9) broken uniformly at random."""
    if not nodes:
        return None
    ratios = [(n.ratio(engine_kind), n) for n in nodes]
    best = min(r for r, _ in ratios)
    tied = [n for r, n in ratios if r - best <= _TIE]
    return (rng or random).choice(tied)


class RegistryUnreadable(Exception):
    """Redis could not be read."""


class NodeRegistry:
    """Reads the shared registry. No caching: every call reads Redis (§6.5)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        warn_after_s: float,
        stale_after_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.redis = redis
        self.warn_after_s = warn_after_s
        self.stale_after_s = stale_after_s
        self._rng = rng

    async def read(self) -> list[NodeInfo]:
        """Every node in the index, sorted by ``node_id``; raises :class:`RegistryUnreadable`.

        Index members whose hash has expired are removed from the index.
        """
        try:
            members = await self.redis.smembers(INDEX_KEY)  # type: ignore[misc]
            ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
            if not ids:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for node_id in ids:
                    pipe.hgetall(node_key(node_id))
                hashes = await pipe.execute()
            at = now_ms()
            nodes: list[NodeInfo] = []
            gone: list[str] = []
            for node_id, raw in zip(ids, hashes, strict=True):
                info = NodeInfo.from_hash(
                    _decode(raw or {}),
                    warn_after_s=self.warn_after_s,
                    stale_after_s=self.stale_after_s,
                    at_ms=at,
                )
                if info is None:
                    gone.append(node_id)
                else:
                    nodes.append(info)
            if gone:
                await self.redis.srem(INDEX_KEY, *gone)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise RegistryUnreadable(type(exc).__name__) from exc
        return nodes

    async def get(self, node_id: str) -> NodeInfo | None:
        """One node by id (any tier), or ``None``."""
        try:
            raw = await self.redis.hgetall(node_key(node_id))  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise RegistryUnreadable(type(exc).__name__) from exc
        return NodeInfo.from_hash(
            _decode(raw or {}),
            warn_after_s=self.warn_after_s,
            stale_after_s=self.stale_after_s,
            at_ms=now_ms(),
        )

    async def resolve_audio_node(
        self,
        engine_kind: str,
        *,
        capabilities: Sequence[str] = (),
        exclude: Iterable[str] = (),
    ) -> NodeInfo | None:
        """The node to send new ``engine_kind`` work to, or ``None`` (§6.5).

        Keeps nodes with the engine and every capability, not draining, not excluded (node
        ids) and not stale; prefers healthy over warning; picks the lowest engine
        ``inflight / capacity`` with a random tie-break. Redis down gives ``None`` and the
        log event ``node_registry_unreadable``.
        """
        try:
            nodes = await self.read()
        except RegistryUnreadable as exc:
            log.warning("node_registry_unreadable", error=str(exc))
            return None
        return select_node(
            nodes, engine_kind, capabilities=capabilities, exclude=exclude, rng=self._rng
        )

    async def node_resolver(
        self, engine_kind: str, capabilities: tuple[str, ...]
    ) -> NodeInfo | None:
        """:meth:`resolve_audio_node` in the shape ``resolve_backend(node_resolver=…)`` takes."""
        return await self.resolve_audio_node(engine_kind, capabilities=capabilities)

    async def targets(self, engine_kind: str, *, include_warning: bool = True) -> list[NodeInfo]:
        """Fan-out targets (§6.6): nodes with the engine, not draining, healthy (or warning)."""
        try:
            nodes = await self.read()
        except RegistryUnreadable as exc:
            log.warning("node_registry_unreadable", error=str(exc))
            return []
        allowed: set[str] = {"healthy", "warning"} if include_warning else {"healthy"}
        return [n for n in nodes if n.has(engine_kind) and not n.draining and n.health in allowed]

    async def listing(
        self, *, engine: str | None = None, include_stale: bool = True
    ) -> list[dict[str, Any]]:
        """The operator listing items (§6.8), never-answered endpoints last.

        Raises :class:`RegistryUnreadable` when Redis cannot be read.
        """
        nodes = await self.read()
        items = [
            n.listing_item()
            for n in nodes
            if (engine is None or n.has(engine)) and (include_stale or n.health != "stale")
        ]
        if include_stale and engine is None:
            items.extend(await self._unanswered())
        return items

    async def _unanswered(self) -> list[dict[str, Any]]:
        prefix = unanswered_key("")
        found: list[tuple[str, dict[str, str]]] = []
        try:
            async for key in self.redis.scan_iter(match=prefix + "*", count=200):
                name = key.decode() if isinstance(key, bytes) else str(key)
                raw = await self.redis.hgetall(name)  # type: ignore[misc]
                if raw:
                    found.append((name[len(prefix) :], _decode(raw)))
        except (RedisError, OSError) as exc:
            raise RegistryUnreadable(type(exc).__name__) from exc
        return [
            {
                "node_id": None,
                "endpoint": endpoint,
                "health": "stale",
                "last_heartbeat_at": None,
                "engines": [],
                "models_loaded": [],
                "inflight": 0,
                "capacity": 0,
                "version": None,
                "load": 0.0,
                "draining": False,
                "last_error": fields.get("last_error") or None,
            }
            for endpoint, fields in sorted(found)
        ]

    async def readiness(self, engine_kinds: Sequence[str]) -> tuple[str, str | None]:
        """``scaiinfer`` readiness (§12.1): ``ok``, ``degraded`` or ``none``, with a reason.

        A node counts when it has one of ``engine_kinds`` (any kind when empty) and is not
        draining.
        """
        try:
            nodes = await self.read()
        except RegistryUnreadable:
            return "none", "node registry unreadable"
        usable = [
            n
            for n in nodes
            if not n.draining and (not engine_kinds or any(n.has(k) for k in engine_kinds))
        ]
        if any(n.health == "healthy" for n in usable):
            return "ok", None
        if any(n.health == "warning" for n in usable):
            return "degraded", "only nodes in the warning tier"
        return "none", "no usable inference node"


def select_node(
    nodes: Sequence[NodeInfo],
    engine_kind: str,
    *,
    capabilities: Sequence[str] = (),
    exclude: Iterable[str] = (),
    rng: random.Random | None = None,
) -> NodeInfo | None:
    """Steps 2–4 of §6.5 over already-read nodes."""
    skip = set(exclude)
    kept = [
        n
        for n in nodes
        if n.has(engine_kind, capabilities)
        and not n.draining
        and n.node_id not in skip
        and n.health != "stale"
    ]
    healthy = [n for n in kept if n.health == "healthy"]
    return pick_least_loaded(healthy or kept, engine_kind, rng=rng)
