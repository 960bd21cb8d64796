"""ScaiEcho served in the test's loop against real Postgres, Redis, S3 and a real dev node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from scaicommon.testing import S3Endpoint, fresh_database
from scaicommon.testing.inprocess import ServiceEnv, running_service
from scaidevstack.node.testing import NodeProcess, start_node
from scaiecho.app import DEFINITION

RELAY_KEY = "sk-devstack"
TRANSCRIBE = "scaiecho:transcribe"


class EchoEnv(ServiceEnv):
    """A running ScaiEcho; keys default to ``scaiecho:transcribe``."""

    DEFAULT_PERMISSIONS = (TRANSCRIBE,)
    ENGINE_KIND = "audio.transcribe"


@contextlib.asynccontextmanager
async def running_echo(
    dsn: str, redis_url: str, s3: S3Endpoint, **overrides: Any
) -> AsyncIterator[EchoEnv]:
    """Migrate ``dsn`` and serve ScaiEcho with ``overrides`` applied to its settings."""
    async with running_service(
        DEFINITION, dsn, redis_url, s3, env_type=EchoEnv, **overrides
    ) as env:
        yield env


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
