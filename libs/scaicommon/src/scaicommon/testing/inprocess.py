"""A service served in the test's own event loop, against real Postgres, Redis and S3."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import httpx
import msgspec
from psycopg.rows import dict_row

from scaicommon.apikeys import ApiKeyStore
from scaicommon.cli import ServiceDefinition
from scaicommon.runtime import Runtime
from scaicommon.settings import Secret
from scaicommon.store import migrate
from scaicommon.testing.inloop import serving
from scaicommon.testing.processes import ManagedProcess, free_port
from scaicommon.testing.services import S3Endpoint, fresh_database

#: Settings fields that hold secrets (given as plain strings in overrides).
_SECRETS = ("relay_api_key", "grpc_service_secret", "s3_secret_key", "scaikey_client_secret")


@dataclass
class ServiceEnv:
    """A running service: base URL, its runtime and a way to mint API keys.

    Subclasses set :attr:`DEFAULT_PERMISSIONS` (what :meth:`key` grants unless told otherwise)
    and :attr:`ENGINE_KIND` (what :meth:`wait_for_node` waits for).
    """

    DEFAULT_PERMISSIONS: ClassVar[tuple[str, ...]] = ()
    ENGINE_KIND: ClassVar[str] = ""

    base: str
    runtime: Runtime
    api_keys: ApiKeyStore

    @property
    def module(self) -> str:
        """The module id."""
        return self.runtime.spec.module

    @property
    def dsn(self) -> str:
        """The service's database."""
        return str(self.runtime.settings.database_url)

    @property
    def mount(self) -> str:
        """Base URL plus ``/v1/modules/<module>``."""
        return f"{self.base}{self.runtime.spec.mount}"

    async def key(
        self,
        *,
        tenant: str = "tnt_a",
        user: str = "usr_a",
        permissions: Sequence[str] | None = None,
        roles: Sequence[str] = (),
    ) -> str:
        """A fresh ``sgk_`` key for ``tenant``/``user`` (default grants: the class's)."""
        _, key = await self.api_keys.create(
            tenant_id=tenant,
            user_id=user,
            created_by="test",
            roles=roles,
            module_permissions=self.DEFAULT_PERMISSIONS if permissions is None else permissions,
        )
        return key

    async def admin_key(self, tenant: str = "tnt_a", user: str = "usr_a") -> str:
        """A key holding ``<module>:admin`` (and nothing else)."""
        return await self.key(tenant=tenant, user=user, permissions=[f"{self.module}:admin"])

    def client(self, token: str, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client on the mount, authenticated with ``token``."""
        return httpx.AsyncClient(
            base_url=self.mount,
            headers={"Authorization": f"Bearer {token}"},
            timeout=kwargs.pop("timeout", 120.0),
            **kwargs,
        )

    def root_client(self, token: str) -> httpx.AsyncClient:
        """A client on the service root (for the paths outside the mount)."""
        return httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=60.0
        )

    async def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a query on the service's own schema."""
        pool = self.runtime.pool
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return list(await cur.fetchall())

    async def audit_rows(self, action: str) -> list[dict[str, Any]]:
        """Audit rows of ``action``, oldest first."""
        return await self.rows(
            "SELECT * FROM audit_log WHERE action = %s ORDER BY created_at, id", action
        )

    async def wait_for_node(self, engine_kind: str | None = None, timeout_s: float = 15.0) -> None:
        """Until the node registry offers a node with ``engine_kind`` (default: the class's)."""
        kind = engine_kind or self.ENGINE_KIND
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await self.runtime.nodes.resolve_audio_node(kind):
            if loop.time() > deadline:
                raise AssertionError(f"no {kind} node in the registry")
            await asyncio.sleep(0.1)

    def worker_env(self, **extra: Any) -> dict[str, str]:
        """``<PREFIX>_*`` variables that give a worker process this service's settings.

        Every setting that differs from its default is passed (secrets in clear, lists
        comma-joined); the worker binds its health listener to a free port on 127.0.0.1.
        """
        settings = self.runtime.settings
        defaults = type(settings)()
        values: dict[str, Any] = {}
        for info in msgspec.structs.fields(settings):
            value = getattr(settings, info.name)
            if value != getattr(defaults, info.name):
                values[info.name] = value
        values.update({"host": "127.0.0.1", "worker_http_port": free_port(), **extra})
        out: dict[str, str] = {}
        for name, value in values.items():
            if isinstance(value, Secret):
                value = value.get()
            elif isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, list | tuple):
                value = ",".join(str(v) for v in value)
            if str(value) != "":
                out[settings.env_name(name)] = str(value)
        return out

    async def start_worker(self, **extra: Any) -> ManagedProcess:
        """``python -m <module> worker`` with this service's settings, once it answers."""
        variables = self.worker_env(**extra)
        port = variables[self.runtime.settings.env_name("worker_http_port")]
        process = ManagedProcess(
            ["-m", self.module, "worker"],
            env=variables,
            ready_url=f"http://127.0.0.1:{port}/healthz",
            timeout=90.0,
            name=f"{self.module}-worker",
        )
        return await asyncio.to_thread(process.start)


E = TypeVar("E", bound=ServiceEnv)


@contextlib.asynccontextmanager
async def running_service(
    definition: ServiceDefinition,
    dsn: str,
    redis_url: str,
    s3: S3Endpoint,
    *,
    env_type: type[E],
    **overrides: Any,
) -> AsyncIterator[E]:
    """Migrate ``dsn`` and serve the service with ``overrides`` applied to its settings.

    Rate limits are off and the node registry is polled every second unless overridden.
    """
    await migrate(dsn, definition.spec.module, definition.migration_sources())
    values: dict[str, Any] = {
        "database_url": dsn,
        "redis_url": redis_url,
        "s3_endpoint_url": s3.url,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "env": "development",
        "rate_limit_enabled": False,
        "node_poll_interval_s": 1.0,
        "node_warn_after_s": 3.0,
        "node_stale_after_s": 6.0,
        **overrides,
    }
    for name in _SECRETS:
        if isinstance(values.get(name), str):
            values[name] = Secret(values[name])
    settings = definition.settings_cls(**values)
    runtime = definition.new_runtime(settings)
    app = definition.create_app(settings, runtime=runtime)
    async with serving(app, wait_path="/healthz") as base:
        yield env_type(base, runtime, ApiKeyStore(runtime.pool))


@contextlib.asynccontextmanager
async def on_fresh_database(
    run: Callable[..., AbstractAsyncContextManager[E]],
    admin_dsn: str,
    redis_url: str,
    s3: S3Endpoint,
    *,
    wait_for_node: bool = True,
    **overrides: Any,
) -> AsyncIterator[E]:
    """``run(dsn, redis_url, s3, **overrides)`` on a new database, dropped afterwards.

    ``run`` is a service's ``running_<module>``; the environment is handed over once a node
    is offered (unless ``wait_for_node`` is false).
    """
    with fresh_database(admin_dsn) as dsn:
        async with run(dsn, redis_url, s3, **overrides) as env:
            if wait_for_node:
                await env.wait_for_node()
            yield env
