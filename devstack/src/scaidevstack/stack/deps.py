"""Postgres and Redis for the local stack: reuse what answers, else start local binaries."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from scaicommon.testing import ManagedProcess
from scaicommon.testing.services import LocalPostgres

DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
STACK_DATABASE = "scai"


def postgres_answers(dsn: str) -> bool:
    """Whether a Postgres server accepts a connection at ``dsn``."""
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_answers(url: str) -> bool:
    """Whether Redis answers PING at ``url``."""
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def start_postgres(state_dir: Path) -> str:
    """A persistent cluster under ``state_dir/postgres`` on port 5432; returns the admin DSN."""
    return LocalPostgres(state_dir / "postgres", 5432).start().admin_dsn


def ensure_database(admin_dsn: str) -> str:
    """Create the stack's database when missing; return its DSN."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (STACK_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(STACK_DATABASE)))
    return admin_dsn.rsplit("/", 1)[0] + "/" + STACK_DATABASE


def start_redis(state_dir: Path) -> ManagedProcess:
    """``redis-server`` on 6379 with its files under ``state_dir/redis``."""
    directory = state_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    proc = ManagedProcess(
        [binary, "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)],
        python=False,
        name="redis",
        log_path=state_dir / "logs" / "redis.log",
    ).start()
    return proc
