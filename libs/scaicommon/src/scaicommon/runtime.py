"""Process-wide resources of a service (pool, Redis, S3, HTTP, auth, limiter, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import redis.asyncio as aioredis
import structlog
from opentelemetry.sdk.trace import TracerProvider
from psycopg_pool import AsyncConnectionPool
from starlette.datastructures import Headers

from scaicommon.apikeys import follow_revocations
from scaicommon.auth import Authenticator, extract_bearer
from scaicommon.grpcclient import NodeClient
from scaicommon.health import Check, CheckResult, Readiness
from scaicommon.metrics import ServiceMetrics
from scaicommon.nodepoller import NodeStack
from scaicommon.nodes import NodeRegistry
from scaicommon.principal import ModulePermissions, Principal
from scaicommon.ratelimit import RateLimiter
from scaicommon.relay import RelayClient
from scaicommon.settings import CommonSettings
from scaicommon.storage import ObjectStore
from scaicommon.store import open_pool
from scaicommon.tracing import build_tracer_provider

log = structlog.get_logger("scaicommon.runtime")

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceSpec:
    """What identifies a service: module id, version, permission keys and its engine kind.

    ``engine_kind`` is the node engine the module serves (``audio.transcribe`` for ScaiEcho,
    ``audio.synthesize`` for ScaiSpeak); readiness ``scaiinfer`` looks for it (§12.1).
    """

    module: str
    version: str
    permissions: ModulePermissions
    engine_kind: str = ""

    @property
    def mount(self) -> str:
        """The module's mount prefix, ``/v1/modules/<module>``."""
        return f"/v1/modules/{self.module}"

    @property
    def user_agent(self) -> str:
        """``<module>/<version> scaicommon/<version>`` for outbound HTTP."""
        from scaicommon import __version__

        return f"{self.module}/{self.version} scaicommon/{__version__}"


class Runtime:
    """Opens and closes the shared resources of one service process."""

    def __init__(
        self,
        spec: ServiceSpec,
        settings: CommonSettings,
        *,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics = ServiceMetrics(spec.module)
        self.tracer_provider = tracer_provider or build_tracer_provider(spec.module, spec.version)
        self.extra_checks: dict[str, Check] = {}
        self._pool: AsyncConnectionPool | None = None
        self._redis: aioredis.Redis | None = None
        self._objects: ObjectStore | None = None
        self._http: httpx.AsyncClient | None = None
        self._authenticator: Authenticator | None = None
        self._limiter: RateLimiter | None = None
        self._readiness: Readiness | None = None
        self._revocations: asyncio.Task[None] | None = None
        self._nodes: NodeStack | None = None
        self._relay: RelayClient | None = None
        self._cached: dict[str, Any] = {}

    def cached(self, key: str, build: Callable[[], T]) -> T:
        """The process-wide object under ``key``, built by ``build()`` on first use.

        For a service's own collaborators (stores, services) that need the started runtime.
        """
        if key not in self._cached:
            self._cached[key] = build()
        value: T = self._cached[key]
        return value

    # ----- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open every resource; nothing here talks to a dependency synchronously."""
        s = self.settings
        self._pool = await open_pool(
            s.database_url, s.schema, min_size=s.database_pool_min, max_size=s.database_pool_max
        )
        self._redis = aioredis.Redis.from_url(
            s.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._objects = ObjectStore.from_settings(s)
        try:
            await self._objects.start()
        except Exception as exc:
            # S3 degrades features; it never stops the service from starting (§12.1).
            log.warning("s3_bucket_create_failed", error=type(exc).__name__)
        self._http = httpx.AsyncClient(
            timeout=10.0, headers={"User-Agent": self.spec.user_agent}, http2=True
        )
        self._authenticator = Authenticator.from_settings(
            s, module=self.spec.permissions, pool=self._pool, http=self._http
        )
        if not s.scaigrid_base_url:
            self._revocations = asyncio.create_task(follow_revocations(s.database_url))
        self._limiter = RateLimiter.from_settings(
            self._redis, s, on_unavailable=self.metrics.ratelimit_unavailable
        )
        self._relay = RelayClient.from_settings(
            s,
            module=self.spec.module,
            user_agent=self.spec.user_agent,
            metrics=self.metrics,
            tracer=self.tracer_provider.get_tracer("scaicommon.relay"),
        )
        self._nodes = NodeStack.from_settings(
            s,
            self._redis,
            module=self.spec.module,
            metrics=self.metrics,
            tracer=self.tracer_provider.get_tracer("scaicommon.grpcclient"),
        )
        self._nodes.start()  # the one poller task of this process (§6.2)

    async def close(self) -> None:
        """Close every resource that was opened."""
        if self._nodes is not None:
            await self._nodes.aclose()
        if self._relay is not None:
            await self._relay.aclose()
        if self._revocations is not None:
            self._revocations.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._revocations
        if self._authenticator is not None:
            await self._authenticator.aclose()
        if self._http is not None:
            await self._http.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()
        self.tracer_provider.shutdown()

    # ----- accessors ------------------------------------------------------------------

    @property
    def pool(self) -> AsyncConnectionPool:
        """The Postgres pool."""
        assert self._pool is not None, "runtime not started"
        return self._pool

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis client."""
        assert self._redis is not None, "runtime not started"
        return self._redis

    @property
    def objects(self) -> ObjectStore:
        """The S3 object store."""
        assert self._objects is not None, "runtime not started"
        return self._objects

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared outbound HTTP client."""
        assert self._http is not None, "runtime not started"
        return self._http

    @property
    def authenticator(self) -> Authenticator:
        """The bearer-token resolver."""
        assert self._authenticator is not None, "runtime not started"
        return self._authenticator

    @property
    def limiter(self) -> RateLimiter:
        """The request rate limiter."""
        assert self._limiter is not None, "runtime not started"
        return self._limiter

    @property
    def nodes(self) -> NodeRegistry:
        """The inference-node registry reader (§6)."""
        assert self._nodes is not None, "runtime not started"
        return self._nodes.registry

    @property
    def node_client(self) -> NodeClient:
        """The gRPC client towards nodes (§7)."""
        assert self._nodes is not None, "runtime not started"
        return self._nodes.client

    @property
    def relay(self) -> RelayClient:
        """The relay client (§8)."""
        assert self._relay is not None, "runtime not started"
        return self._relay

    async def authenticate_headers(self, headers: Headers, request_id: str) -> Principal:
        """Resolve the principal of an HTTP request from its headers."""
        token = extract_bearer(headers)
        return await self.authenticator.authenticate(
            token, request_id=request_id, tenant_header=headers.get("x-tenant-id")
        )

    # ----- readiness ------------------------------------------------------------------

    @property
    def readiness(self) -> Readiness:
        """The readiness evaluator (platform §12.1)."""
        if self._readiness is None:
            checks: dict[str, Check] = {
                "database": self._check_database,
                "redis": self._check_redis,
                "s3": self._check_s3,
                "scaiinfer": self._check_scaiinfer,
                "relay": self._check_relay,
                **self.extra_checks,
            }
            self._readiness = Readiness(
                self.spec.module, self.spec.version, self.settings.phase, checks
            )
        return self._readiness

    async def _check_database(self) -> CheckResult:
        async with self.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
        return CheckResult("ok")

    async def _check_redis(self) -> CheckResult:
        await self.redis.ping()
        return CheckResult("ok")

    async def _check_s3(self) -> CheckResult:
        await self.objects.head_bucket()
        return CheckResult("ok")

    async def _check_scaiinfer(self) -> CheckResult:
        if not (self.settings.nodes or self.settings.nodes_dns):
            return CheckResult("none", "no inference nodes configured")
        kinds = (self.spec.engine_kind,) if self.spec.engine_kind else ()
        status, reason = await self.nodes.readiness(kinds)
        return CheckResult(status, reason)

    async def _check_relay(self) -> CheckResult:
        status, reason = self.relay.readiness()
        return CheckResult(status, reason)
