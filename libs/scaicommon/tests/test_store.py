"""Migration runner against a real Postgres."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from scaicommon.store import library_migrations, migrate


async def test_concurrent_migrate_applies_each_once(pg_dsn: str) -> None:
    sources = [("scaicommon", library_migrations())]
    first, second = await asyncio.gather(
        migrate(pg_dsn, "scaiecho", sources), migrate(pg_dsn, "scaiecho", sources)
    )
    applied = sorted(first + second)
    assert applied == ["scaicommon:001", "scaicommon:002", "scaicommon:003", "scaicommon:004"]
    assert await migrate(pg_dsn, "scaiecho", sources) == []
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT id FROM scaiecho.schema_migrations ORDER BY id").fetchall()
    assert [r[0] for r in rows] == applied


async def test_two_schemas_are_independent(pg_dsn: str) -> None:
    sources = [("scaicommon", library_migrations())]
    await migrate(pg_dsn, "scaiecho", sources)
    assert len(await migrate(pg_dsn, "scaispeak", sources)) == 4


@pytest.mark.parametrize("table", ["audit_log", "erasure_audit"])
async def test_audit_tables_are_append_only(pg_dsn: str, table: str) -> None:
    await migrate(pg_dsn, "scaiecho", [("scaicommon", library_migrations())])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO scaiecho")
        if table == "audit_log":
            conn.execute(
                "INSERT INTO audit_log (id, action, status, actor_id, actor_type, tenant_id,"
                " resource_type, request_id) VALUES ('audit_1', 'scaiecho.policy.update',"
                " 'SUCCESS', 'usr_a', 'user', 'tnt_a', 'policy', 'req_1')"
            )
        else:
            conn.execute(
                "INSERT INTO erasure_audit (id, event, tenant_id, subject_type, subject_id,"
                " actor_id, actor_type) VALUES ('era_1', 'requested', 'tnt_a', 'speaker',"
                " 'spkr_1', 'usr_a', 'user')"
            )
        for statement in (
            f"UPDATE {table} SET tenant_id = 'x'",  # noqa: S608 (fixed table names)
            f"DELETE FROM {table}",  # noqa: S608
            f"TRUNCATE {table}",
        ):
            with pytest.raises(psycopg.Error) as info:
                conn.execute(statement)
            assert info.value.sqlstate == "42501"


def test_local_postgres_fallback_starts_a_real_cluster() -> None:
    """The fallback used without SCAI_TEST_DATABASE_URL and without Docker."""
    from scaicommon.testing import start_local_postgres

    with start_local_postgres() as dsn, psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
