"""ScaiEcho served in the test's loop against real Postgres, Redis, S3 and a real dev node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from scaicommon.apikeys import ApiKeyStore
from scaicommon.runtime import Runtime
from scaicommon.settings import Secret
from scaicommon.store import migrate
from scaicommon.testing import S3Endpoint, fresh_database
from scaicommon.testing.inloop import serving
from scaidevstack.node.testing import NodeProcess, start_node
from scaiecho.app import DEFINITION
from scaiecho.settings import EchoSettings

RELAY_KEY = "sk-devstack"
TRANSCRIBE = "scaiecho:transcribe"


@dataclass
class EchoEnv:
    """A running ScaiEcho: base URL, its runtime and a way to mint API keys."""

    base: str
    runtime: Runtime
    api_keys: ApiKeyStore

    @property
    def dsn(self) -> str:
        """The service's database."""
        return str(self.runtime.settings.database_url)

    @property
    def mount(self) -> str:
        """Base URL plus ``/v1/modules/scaiecho``."""
        return f"{self.base}/v1/modules/scaiecho"

    async def key(
        self,
        *,
        tenant: str = "tnt_a",
        user: str = "usr_a",
        permissions: Sequence[str] = (TRANSCRIBE,),
        roles: Sequence[str] = (),
    ) -> str:
        """A fresh ``sgk_`` key for ``tenant``/``user`` with the given grants."""
        _, key = await self.api_keys.create(
            tenant_id=tenant,
            user_id=user,
            created_by="test",
            roles=roles,
            module_permissions=permissions,
        )
        return key

    async def wait_for_node(self, timeout_s: float = 15.0) -> None:
        """Until the node registry offers a transcribe node."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await self.runtime.nodes.resolve_audio_node("audio.transcribe"):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("no transcribe node in the registry")
            await asyncio.sleep(0.1)

    def client(self, key: str, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client on the mount, authenticated with ``key``."""
        return httpx.AsyncClient(
            base_url=self.mount,
            headers={"Authorization": f"Bearer {key}"},
            timeout=kwargs.pop("timeout", 120.0),
            **kwargs,
        )


@contextlib.asynccontextmanager
async def running_echo(
    dsn: str, redis_url: str, s3: S3Endpoint, **overrides: Any
) -> AsyncIterator[EchoEnv]:
    """Migrate ``dsn`` and serve ScaiEcho with ``overrides`` applied to its settings."""
    await migrate(dsn, "scaiecho", DEFINITION.migration_sources())
    values: dict[str, Any] = {
        "database_url": dsn,
        "redis_url": redis_url,
        "s3_endpoint_url": s3.url,
        "s3_access_key": s3.access_key,
        "s3_secret_key": Secret(s3.secret_key),
        "env": "development",
        "rate_limit_enabled": False,
        "node_poll_interval_s": 1.0,
        "node_warn_after_s": 3.0,
        "node_stale_after_s": 6.0,
    }
    for name in ("relay_api_key", "grpc_service_secret"):
        if isinstance(overrides.get(name), str):
            overrides[name] = Secret(overrides[name])
    values.update(overrides)
    settings = EchoSettings(**values)
    runtime = DEFINITION.new_runtime(settings)
    app = DEFINITION.create_app(settings, runtime=runtime)
    async with serving(app, wait_path="/healthz") as base:
        yield EchoEnv(base, runtime, ApiKeyStore(runtime.pool))


def with_node(node: NodeProcess) -> dict[str, Any]:
    """Settings overrides that point ScaiEcho at a dev node (A) and its relay API (B)."""
    return {
        "nodes": [node.grpc_target],
        "relay_base_url": node.http_url,
        "relay_api_key": RELAY_KEY,
    }


@pytest.fixture(scope="session")
def dev_node() -> Iterator[NodeProcess]:
    """One real dev node (speech-to-text engine) for the whole session."""
    node = start_node(engines=("stt",), env={"DEVSTACK_RELAY_API_KEY": RELAY_KEY})
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
async def echo_with_node(
    pg_admin_dsn: str, redis_server_url: str, s3_endpoint: S3Endpoint, dev_node: NodeProcess
) -> AsyncIterator[EchoEnv]:
    """ScaiEcho (own database, flushed shared Redis) with the dev node as A and its relay as B.

    New tenants get the relay default: ``AB`` with default ``B``.
    """
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    with fresh_database(pg_admin_dsn) as dsn:
        async with running_echo(dsn, redis_server_url, s3_endpoint, **with_node(dev_node)) as env:
            await env.wait_for_node()
            yield env


@pytest.fixture
async def echo_bare(pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint) -> AsyncIterator[EchoEnv]:
    """ScaiEcho without nodes or relay (for the admin, policy and validation paths)."""
    async with running_echo(pg_dsn, redis_url, s3_endpoint) as env:
        yield env
