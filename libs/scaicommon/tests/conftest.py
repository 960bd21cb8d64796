"""Fixtures shared by the scaicommon tests: a migrated pool and a Redis client.

A test module picks its schema with a module-level ``SCHEMA`` (default ``scaiecho``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from scaicommon.store import library_migrations, migrate, open_pool


@pytest.fixture
async def pool(
    pg_dsn: str, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool on a fresh database with the shared tables migrated."""
    schema = getattr(request.module, "SCHEMA", "scaiecho")
    await migrate(pg_dsn, schema, [("scaicommon", library_migrations())])
    pool = await open_pool(pg_dsn, schema)
    await pool.wait()
    yield pool
    await pool.close()


@pytest.fixture
async def rds(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client of the (flushed) test Redis."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
