"""Postgres connection pool and the migration runner (platform §16)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger("scaicommon.store")

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def check_schema_name(schema: str) -> str:
    """Validate a schema name (lower-case identifier) and return it."""
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def open_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, wait_s: float = 10.0
) -> AsyncConnectionPool:
    """Open a psycopg pool whose connections use ``schema`` as their search path."""
    check_schema_name(schema)
    pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"options": f"-c search_path={schema}", "autocommit": True},
        open=False,
        timeout=wait_s,
    )
    await pool.open(wait=False)
    return pool


def library_migrations() -> Traversable:
    """The directory of scaicommon's shared-table migrations."""
    return resources.files("scaicommon.store") / "migrations"


def _lock_key(schema: str) -> int:
    # A stable 31-bit key per schema, so services sharing a server do not block each other.
    return zlib.crc32(f"scai_migrate:{schema}".encode()) & 0x7FFFFFFF


def _migration_files(directory: Traversable) -> list[tuple[str, Traversable]]:
    files = []
    for entry in directory.iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            files.append((match.group(1), entry))
    return sorted(files, key=lambda item: item[0])


async def migrate(dsn: str, schema: str, sources: Sequence[tuple[str, Traversable]]) -> list[str]:
    """Apply ``NNN_*.sql`` files of each ``(source, directory)`` in order; return applied ids.

    Runs under a Postgres advisory lock, so two processes migrating at once apply each
    migration exactly once. Ids are recorded as ``<source>:<NNN>`` in ``schema_migrations``.
    """
    check_schema_name(schema)
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(schema),))
        try:
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT id FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for source, directory in sources:
                for number, entry in _migration_files(directory):
                    migration_id = f"{source}:{number}"
                    if migration_id in done:
                        continue
                    body = entry.read_text(encoding="utf-8")
                    async with conn.transaction():
                        await conn.execute(body.encode())
                        await conn.execute(
                            "INSERT INTO schema_migrations (id) VALUES (%s)", (migration_id,)
                        )
                    applied_now.append(migration_id)
                    log.info("migration_applied", migration=migration_id, schema=schema)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(schema),))
    return applied_now
