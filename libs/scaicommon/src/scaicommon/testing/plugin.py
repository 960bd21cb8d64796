"""pytest fixtures shared by every package's tests (entry point ``scaicommon``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis

from scaicommon.testing.services import (
    LocalRedis,
    S3Endpoint,
    fresh_database,
    start_postgres,
    start_redis,
    start_s3,
)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a Postgres server the tests may create databases on."""
    with start_postgres() as dsn:
        yield dsn


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a new, empty database, dropped after the test."""
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """URL of the shared test Redis."""
    with start_redis() as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The shared test Redis, flushed before the test."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    return redis_server_url


@pytest.fixture
def local_redis() -> Iterator[LocalRedis]:
    """A private Redis server that the test may stop and restart."""
    with contextlib.closing(LocalRedis().start()) as server:
        yield server


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    """A private Redis server for the module's tests (they may flush, stop and restart it)."""
    with contextlib.closing(LocalRedis().start()) as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """An S3-compatible endpoint (MinIO container or moto_server)."""
    with start_s3() as endpoint:
        yield endpoint
