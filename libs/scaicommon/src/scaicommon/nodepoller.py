"""Node discovery and the registry poller (platform §6.1–§6.3).

Every service process runs one :class:`NodePoller`. Each tick it tries to take the shared
lease; the winner calls ``GetNodeInfo`` and ``Health/Check`` on every endpoint concurrently
and writes the registry. Every process then refreshes its ``<module>_nodes`` gauge from Redis
and closes channels of endpoints gone from discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import redis.asyncio as aioredis
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from redis.exceptions import RedisError

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2
from scaicommon.grpcclient import GET_NODE_INFO_DEADLINE_S, SERVICE, ChannelPool, NodeClient
from scaicommon.logging import scrub
from scaicommon.metrics import ServiceMetrics
from scaicommon.nodes import (
    ENGINE_KINDS,
    HEALTHS,
    INDEX_KEY,
    LEASE_KEY,
    EngineInfo,
    NodeRegistry,
    RegistryUnreadable,
    endpoint_key,
    node_key,
    now_ms,
    unanswered_key,
)
from scaicommon.requestid import new_request_id
from scaicommon.settings import CommonSettings

log = structlog.get_logger("scaicommon.nodepoller")

_ERROR_CHARS = 200


# ----- discovery (§6.1) ---------------------------------------------------------------


def format_endpoint(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def parse_endpoint(text: str) -> str:
    """Validate one ``<PREFIX>_NODES`` entry and return it normalised; raises ``ValueError``."""
    value = text.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad node endpoint {text!r}: expected [v6]:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad node endpoint {text!r}: not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"bad node endpoint {text!r}: expected host:port or [v6]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad node endpoint {text!r}: bad port")
    return format_endpoint(host, int(port_text))


class Discovery:
    """The endpoint set: ``<PREFIX>_NODES`` plus the A/AAAA records of ``<PREFIX>_NODES_DNS``."""

    def __init__(self, static: Sequence[str] = (), dns_name: str = "", dns_port: int = 50051):
        self.static = tuple(dict.fromkeys(parse_endpoint(e) for e in static))
        self.dns_name = dns_name.strip()
        self.dns_port = dns_port

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Discovery:
        """Discovery configured by ``nodes``, ``nodes_dns`` and ``nodes_port``."""
        return cls(settings.nodes, settings.nodes_dns, settings.nodes_port)

    @property
    def configured(self) -> bool:
        """Whether any discovery is configured at all."""
        return bool(self.static or self.dns_name)

    async def endpoints(self) -> list[str]:
        """The current endpoint set (DNS resolved now); a DNS failure keeps the static list."""
        found = list(self.static)
        if self.dns_name:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(
                    self.dns_name, self.dns_port, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                log.warning("node_dns_failed", name=self.dns_name, error=str(exc))
                infos = []
            for family, _type, _proto, _canon, sockaddr in infos:
                if family in (socket.AF_INET, socket.AF_INET6):
                    found.append(format_endpoint(str(sockaddr[0]), self.dns_port))
        return list(dict.fromkeys(found))


# ----- one poll -----------------------------------------------------------------------


@dataclass(frozen=True)
class PollOutcome:
    """What one endpoint answered in one tick."""

    endpoint: str
    node_id: str | None
    ok: bool
    error: str | None = None


def node_fields(info: Any, endpoint: str, draining: bool, heartbeat_ms: int) -> dict[str, str]:
    """The node hash fields of §6.3 from a ``GetNodeInfo`` answer (without ``first_seen_at``)."""
    engines = [
        EngineInfo(
            kind=e.kind,
            name=e.name,
            model=e.model,
            capabilities=tuple(e.capabilities),
            languages=tuple(e.languages),
            inflight=int(e.inflight),
            capacity=int(e.capacity),
            builtin_voices=tuple(e.builtin_voices),
            output_sample_rate_hz=int(e.output_sample_rate_hz),
            embedding_dims=int(e.embedding_dims),
        ).to_json()
        for e in info.engines
    ]
    return {
        "node_id": info.node_id,
        "endpoint": endpoint,
        "version": info.version,
        "api_version": info.api_version,
        "engines": json.dumps(engines, separators=(",", ":")),
        "engine_kinds": ",".join(dict.fromkeys(e["kind"] for e in engines)),
        "models_loaded": json.dumps(list(info.models_loaded), separators=(",", ":")),
        "inflight": str(int(info.inflight)),
        "capacity": str(int(info.capacity)),
        "load": repr(float(info.load)),
        "draining": "1" if draining else "0",
        "started_at": str(int(info.started_at_unix_ms)),
        "last_heartbeat_at": str(heartbeat_ms),
    }


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        details = exc.details() or ""
        text = f"{exc.code().name}: {details}" if details else exc.code().name
    else:
        text = f"{type(exc).__name__}: {exc}"
    return scrub(text)[:_ERROR_CHARS]


class NodePoller:
    """The poller task of one process (§6.2)."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        client: NodeClient,
        discovery: Discovery,
        interval_s: float,
        stale_after_s: float,
        metrics: ServiceMetrics | None = None,
        owner: str | None = None,
    ) -> None:
        self.redis = redis
        self.client = client
        self.discovery = discovery
        self.interval_s = interval_s
        self.ttl_s = int(max(1, round(10 * stale_after_s)))
        self.metrics = metrics
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.ticks_polled = 0
        self._last_errors: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def registry(self) -> NodeRegistry:
        """The registry this poller writes (the client's)."""
        return self.client.registry

    @property
    def channels(self) -> ChannelPool:
        """The client's channel pool."""
        return self.client.channels

    # ----- lifecycle -------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run` as a background task."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="scai-node-poller")
        return self._task

    async def stop(self) -> None:
        """Cancel the task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Tick every ``interval_s`` until cancelled; a failing tick never ends the loop."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node_poll_tick_failed", error=type(exc).__name__)
            next_at += self.interval_s
            now = loop.time()
            if next_at < now:  # a slow tick: skip the missed ticks, keep the phase
                next_at = now
            await asyncio.sleep(next_at - now)

    # ----- one tick --------------------------------------------------------------------

    async def tick(self) -> list[PollOutcome] | None:
        """One tick: poll when the lease is won; refresh gauges and channels either way.

        Returns the outcomes when this process polled, else ``None``.
        """
        endpoints = await self.discovery.endpoints()
        outcomes: list[PollOutcome] | None = None
        if endpoints and await self.acquire_lease():
            outcomes = await self.poll(endpoints)
        await self.channels.retain(endpoints)
        await self.refresh_gauge()
        return outcomes

    async def acquire_lease(self) -> bool:
        """``SET scai:nodes:poll_lease <owner> NX PX <interval_ms × 0.8>``."""
        px = max(1, int(self.interval_s * 1000 * 0.8))
        try:
            won = await self.redis.set(LEASE_KEY, self.owner, nx=True, px=px)
        except (RedisError, OSError) as exc:
            log.warning("node_poll_lease_failed", error=type(exc).__name__)
            return False
        return bool(won)

    async def poll(self, endpoints: Sequence[str]) -> list[PollOutcome]:
        """Poll every endpoint concurrently and write the registry."""
        self.ticks_polled += 1
        request_id = new_request_id()
        seen: dict[str, str] = {}
        outcomes = await asyncio.gather(*(self._poll_one(ep, request_id, seen) for ep in endpoints))
        return list(outcomes)

    async def _poll_one(self, endpoint: str, request_id: str, seen: dict[str, str]) -> PollOutcome:
        try:
            info, serving = await self._ask(endpoint, request_id)
        except (grpc.RpcError, TimeoutError, OSError) as exc:
            return await self._record_failure(endpoint, _error_text(exc))
        node_id = str(info.node_id)
        previous = seen.get(node_id)
        if previous is not None and previous != endpoint:
            log.warning(
                "node_id_collision", node_id=node_id, endpoint=endpoint, other_endpoint=previous
            )
        seen[node_id] = endpoint
        draining = bool(info.draining) or serving is False
        await self._record_success(endpoint, info, draining)
        return PollOutcome(endpoint, node_id, True)

    async def _ask(self, endpoint: str, request_id: str) -> tuple[Any, bool | None]:
        """``GetNodeInfo`` and ``Health/Check`` together; health failures do not fail the poll."""
        stub = self.client.bind(endpoint, timeout_s=GET_NODE_INFO_DEADLINE_S)
        metadata = self.client.metadata(request_id=request_id)
        info_call = stub.GetNodeInfo(audio_node_pb2.GetNodeInfoRequest(), metadata=metadata)
        health = health_pb2_grpc.HealthStub(self.channels.channel(endpoint))
        health_call = health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=GET_NODE_INFO_DEADLINE_S
        )
        results: tuple[Any, Any] = await asyncio.gather(
            info_call, health_call, return_exceptions=True
        )
        info, checked = results
        if isinstance(info, BaseException):
            raise info
        serving: bool | None = None
        if not isinstance(checked, BaseException):
            serving = checked.status == health_pb2.HealthCheckResponse.SERVING
        return info, serving

    async def _record_success(self, endpoint: str, info: Any, draining: bool) -> None:
        node_id = str(info.node_id)
        at = now_ms()
        fields = node_fields(info, endpoint, draining, at)
        key = node_key(node_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.hsetnx(key, "first_seen_at", str(at))
            pipe.hdel(key, "last_error", "last_error_at")
            pipe.expire(key, self.ttl_s)
            pipe.sadd(INDEX_KEY, node_id)
            pipe.set(endpoint_key(endpoint), node_id, ex=self.ttl_s)
            pipe.delete(unanswered_key(endpoint))
            await pipe.execute()
        if self._last_errors.pop(endpoint, None) is not None:
            log.info("node_poll_recovered", endpoint=endpoint, node_id=node_id)

    async def _record_failure(self, endpoint: str, error: str) -> PollOutcome:
        at = str(now_ms())
        if self._last_errors.get(endpoint) != error:
            log.warning("node_poll_failed", endpoint=endpoint, error=error)
        self._last_errors[endpoint] = error
        raw = await self.redis.get(endpoint_key(endpoint))
        node_id = raw.decode() if isinstance(raw, bytes) else raw
        fields = {"last_error": error, "last_error_at": at}
        if node_id and await self.redis.exists(node_key(node_id)):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(node_key(node_id), mapping=fields)
                pipe.expire(node_key(node_id), self.ttl_s)
                pipe.expire(endpoint_key(endpoint), self.ttl_s)
                await pipe.execute()
        else:
            node_id = None
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(unanswered_key(endpoint), mapping=fields)
                pipe.expire(unanswered_key(endpoint), self.ttl_s)
                await pipe.execute()
        return PollOutcome(endpoint, node_id, False, error)

    async def refresh_gauge(self) -> None:
        """Set ``<module>_nodes{health, engine_kind}`` from the registry."""
        if self.metrics is None:
            return
        try:
            nodes = await self.registry.read()
        except RegistryUnreadable:
            return
        counts = {(h, k): 0 for h in HEALTHS for k in ENGINE_KINDS}
        for node in nodes:
            for kind in node.engine_kinds:
                counts[(node.health, kind)] = counts.get((node.health, kind), 0) + 1
        for (health, kind), count in counts.items():
            self.metrics.nodes.labels(health=health, engine_kind=kind).set(count)


@dataclass
class NodeStack:
    """Registry reader, channels, client and poller of one process, built from settings."""

    registry: NodeRegistry
    channels: ChannelPool
    client: NodeClient
    poller: NodePoller

    @classmethod
    def from_settings(
        cls,
        settings: CommonSettings,
        redis: aioredis.Redis,
        *,
        module: str,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> NodeStack:
        """Everything backend A needs; raises ``ValueError`` for a malformed ``NODES`` entry."""
        registry = NodeRegistry(
            redis,
            warn_after_s=settings.node_warn_after_s,
            stale_after_s=settings.node_stale_after_s,
        )
        channels = ChannelPool(
            tls=settings.node_tls,
            ca_file=settings.node_ca_file,
            stale_after_s=settings.node_stale_after_s,
        )
        client = NodeClient.from_settings(
            settings,
            module=module,
            registry=registry,
            channels=channels,
            metrics=metrics,
            tracer=tracer,
        )
        poller = NodePoller(
            redis=redis,
            client=client,
            discovery=Discovery.from_settings(settings),
            interval_s=settings.node_poll_interval_s,
            stale_after_s=settings.node_stale_after_s,
            metrics=metrics,
        )
        return cls(registry, channels, client, poller)

    def start(self) -> None:
        """Start the poller task."""
        self.poller.start()

    async def aclose(self) -> None:
        """Stop the poller and close every channel."""
        await self.poller.stop()
        await self.channels.aclose()
