"""Audit log and erasure audit writers against a real Postgres (platform §10)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from scaicommon.audit import AuditWriter, ErasureAuditWriter, check_action
from scaicommon.errors import ScaiError
from scaicommon.principal import ModulePermissions, Principal
from scaicommon.store import open_pool

SCHEMA = "scaiecho"
PERMS = ModulePermissions("scaiecho", frozenset({"scaiecho:admin"}), frozenset())
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c3JfYSJ9.c2lnbmF0dXJl"


def caller(tenant: str | None = "tnt_a", **extra: Any) -> Principal:
    fields: dict[str, Any] = {
        "user_id": "usr_a",
        "tenant_id": tenant,
        "module": PERMS,
        "auth_kind": "jwt",
        "request_id": "req_0123456789abcdef01234567",
        "token": JWT,
        "email": "a@example.com",
        "partner_id": "prt_x",
    }
    fields.update(extra)
    return Principal(**fields)


async def count(pool: AsyncConnectionPool[Any], table: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def test_action_names() -> None:
    for good in (
        "scaiecho.transcription.create",
        "scaispeak.erasure_audit.read",
        "scaiecho.stream.open",
        "scaispeak.voice.share",
        "scaiecho.speaker.warm",
        "scaiecho.speaker.evict",
        "scaiecho.usage.export",
    ):
        assert check_action(good) == good
    for bad in (
        "scaiecho.speaker.destroy",
        "scaiecho.speaker",
        "ScaiEcho.speaker.read",
        "scaiecho.speaker.read.extra",
        "scaiecho..read",
        "",
    ):
        with pytest.raises(ValueError):
            check_action(bad)
    with pytest.raises(ValueError):
        check_action("scaispeak.voice.read", "scaiecho")


async def test_write_and_list_shape(pool: AsyncConnectionPool[Any]) -> None:
    writer = AuditWriter(pool, module="scaiecho")
    audit_id = await writer.write(
        caller(api_key_id="apikey_01K", actor={"client_id": "svc-gw", "sub": "x"}),
        action="scaiecho.speaker.create",
        status="success",
        resource_type="speaker",
        resource_id="spkr_01X",
        http_status=201,
        ip_address="203.0.113.7",
        user_agent="curl/8 Bearer abc.def.ghi",
        details={
            "name": "Alice",
            "authorization": "Bearer sk-live",
            "note": f"token={JWT}",
            "nested": [{"api_key": "sgk_abcdefghijkl"}, "sgk_abcdefghijklmnop"],
        },
    )
    assert audit_id.startswith("audit_")
    page = await writer.list("tnt_a", limit=10)
    assert (page.has_more, page.next_cursor) == (False, None)
    (item,) = page.items
    assert list(item)[:2] == ["id", "timestamp"]
    assert TS_RE.match(item["timestamp"])
    assert "created_at" not in item
    assert {k: v for k, v in item.items() if k != "timestamp"} == {
        "id": audit_id,
        "action": "scaiecho.speaker.create",
        "status": "SUCCESS",
        "error_code": None,
        "http_status": 201,
        "actor_id": "usr_a",
        "actor_type": "user",
        "actor_email": "a@example.com",
        "api_key_id": "apikey_01K",
        "service_account": "svc-gw",
        "tenant_id": "tnt_a",
        "partner_id": "prt_x",
        "resource_type": "speaker",
        "resource_id": "spkr_01X",
        "request_id": "req_0123456789abcdef01234567",
        "ip_address": "203.0.113.7",
        "user_agent": "curl/8 Bearer [REDACTED]",
        "details": {
            "name": "Alice",
            "authorization": "[REDACTED]",
            "note": "token=[REDACTED]",
            "nested": [{"api_key": "[REDACTED]"}, "[REDACTED]"],
        },
    }
    assert (await writer.list("tnt_b", limit=10)).items == []

    # A service token: actor is the client; a bad IP is dropped rather than failing the write.
    service = caller(auth_kind="service", client_id="scaigrid-worker", user_id="svc")
    await writer.write(
        service,
        action="scaiecho.policy.update",
        status="FAILURE",
        resource_type="policy",
        error_code="VALIDATION_ERROR",
        http_status=422,
        ip_address="not-an-ip",
    )
    newest = (await writer.list("tnt_a", limit=1)).items[0]
    assert (newest["actor_id"], newest["actor_type"], newest["status"], newest["ip_address"]) == (
        "scaigrid-worker",
        "service",
        "FAILURE",
        None,
    )

    with pytest.raises(ValueError):
        await writer.write(
            caller(), action="scaispeak.voice.read", status="SUCCESS", resource_type="voice"
        )
    with pytest.raises(ValueError):
        await writer.write(
            caller(), action="scaiecho.speaker.read", status="OK", resource_type="speaker"
        )
    assert await count(pool, "audit_log") == 2


async def test_audit_row_shares_the_callers_transaction(pool: AsyncConnectionPool[Any]) -> None:
    writer = AuditWriter(pool)
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE things (id text PRIMARY KEY)")

    # The change fails after the audit insert: both roll back.
    with pytest.raises(RuntimeError):
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO things VALUES ('t1')")
            await writer.write(
                caller(),
                action="scaiecho.policy.update",
                status="SUCCESS",
                resource_type="policy",
                conn=conn,
            )
            raise RuntimeError("boom")
    assert (await count(pool, "things"), await count(pool, "audit_log")) == (0, 0)

    # The audit insert fails: the change rolls back with it.
    row = writer.build_row(
        caller(), action="scaiecho.policy.update", status="SUCCESS", resource_type="policy"
    )
    await writer.insert_row(row)
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO things VALUES ('t2')")
            await writer.insert_row(row, conn=conn)  # same id again
    assert (await count(pool, "things"), await count(pool, "audit_log")) == (0, 1)

    # Both commit together.
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO things VALUES ('t3')")
        await writer.write(
            caller(),
            action="scaiecho.policy.update",
            status="SUCCESS",
            resource_type="policy",
            conn=conn,
        )
    assert (await count(pool, "things"), await count(pool, "audit_log")) == (1, 2)


async def test_write_or_log_never_raises(pool: AsyncConnectionPool[Any], pg_dsn: str) -> None:
    broken = await open_pool(pg_dsn, "no_such_schema")
    try:
        writer = AuditWriter(broken)
        with structlog.testing.capture_logs() as logs:
            result = await writer.write_or_log(
                caller(),
                action="scaiecho.transcription.create",
                status="SUCCESS",
                resource_type="transcription",
                resource_id="job_01X",
                details={"duration_ms": 1200, "token": "secret"},
            )
        assert result is None
        (event,) = [e for e in logs if e["event"] == "audit_write_failed"]
        assert event["log_level"] == "error"
        row = event["row"]
        assert row["id"].startswith("audit_")
        assert (row["action"], row["resource_id"], row["tenant_id"]) == (
            "scaiecho.transcription.create",
            "job_01X",
            "tnt_a",
        )
        assert row["details"] == {"duration_ms": 1200, "token": "[REDACTED]"}
        # The logged row can be recovered into the real table as is.
        await AuditWriter(pool).insert_row(row)
    finally:
        await broken.close()
    ok = await AuditWriter(pool).write_or_log(
        caller(),
        action="scaiecho.transcription.create",
        status="SUCCESS",
        resource_type="transcription",
    )
    assert ok is not None
    assert await count(pool, "audit_log") == 2


async def test_audit_pagination_and_filters(pool: AsyncConnectionPool[Any]) -> None:
    writer = AuditWriter(pool)
    ids = []
    # Rows of one transaction share created_at (now()): the id breaks the tie.
    async with pool.connection() as conn, conn.transaction():
        for i in range(5):
            action = "scaiecho.speaker.read" if i % 2 == 0 else "scaiecho.speaker.list"
            ids.append(
                await writer.write(
                    caller(), action=action, status="SUCCESS", resource_type="speaker", conn=conn
                )
            )
    await writer.write(
        caller(tenant="tnt_b"),
        action="scaiecho.speaker.read",
        status="SUCCESS",
        resource_type="speaker",
    )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await writer.list("tnt_a", limit=2, cursor=cursor)
        pages += 1
        seen += [item["id"] for item in page.items]
        assert (page.next_cursor is None) == (not page.has_more)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == list(reversed(ids))

    reads = await writer.list("tnt_a", limit=2, filters={"action": "scaiecho.speaker.read"})
    assert [i["id"] for i in reads.items] == [ids[4], ids[2]] and reads.has_more
    rest = await writer.list(
        "tnt_a", limit=2, cursor=reads.next_cursor, filters={"action": "scaiecho.speaker.read"}
    )
    assert [i["id"] for i in rest.items] == [ids[0]]

    for tenant, filters in (("tnt_a", {}), ("tnt_b", {"action": "scaiecho.speaker.read"})):
        with pytest.raises(ScaiError) as info:
            await writer.list(tenant, limit=2, cursor=reads.next_cursor, filters=filters)
        assert info.value.details is not None
        assert [d["field"] for d in info.value.details] == ["cursor"]
    with pytest.raises(ScaiError):
        await writer.list("tnt_a", limit=2, cursor="garbage!")
    with pytest.raises(ValueError):
        await writer.list("tnt_a", limit=2, filters={"tenant_id": "tnt_b"})


async def test_erasure_audit(pool: AsyncConnectionPool[Any]) -> None:
    writer = ErasureAuditWriter(pool)
    first = await writer.append(
        "requested", "tnt_a", "speaker", "spkr_01A", "usr_a", "user", request_id="req_1"
    )
    async with pool.connection() as conn, conn.transaction():
        await writer.append(
            "artifact_deleted",
            "tnt_a",
            "speaker",
            "spkr_01A",
            "usr_a",
            "user",
            details={"key": "scaiecho/speakers/spkr_01A/reference.wav"},
            conn=conn,
        )
        await writer.append(
            "node_evict_failed",
            "tnt_a",
            "speaker",
            "spkr_01A",
            "usr_a",
            "user",
            node_id="node-2",
            details={"error": "UNAVAILABLE"},
            conn=conn,
        )
    await writer.append(
        "completed",
        "tnt_a",
        "speaker",
        "spkr_01A",
        "usr_a",
        "user",
        details={"artifacts_deleted": 1, "nodes_evicted": 0, "nodes_failed": 1},
    )
    await writer.append(
        "node_evicted",
        "tnt_a",
        "speaker",
        "spkr_01A",
        "system:reconciler",
        "system",
        node_id="node-2",
    )
    await writer.append("requested", "tnt_a", "speaker", "spkr_01B", "usr_a", "user")
    await writer.append("requested", "tnt_b", "voice", "voice_01C", "usr_b", "user")
    assert first.startswith("era_")

    events = await writer.events_for("tnt_a", "speaker", "spkr_01A")
    assert [e["event"] for e in events] == [
        "requested",
        "artifact_deleted",
        "node_evict_failed",
        "completed",
        "node_evicted",
    ]
    assert TS_RE.match(events[0]["created_at"])
    assert events[1]["details"] == {"key": "scaiecho/speakers/spkr_01A/reference.wav"}
    assert events[2]["node_id"] == "node-2"

    page = await writer.list("tnt_a", "speaker", "spkr_01A", limit=3)
    assert [e["event"] for e in page.items] == ["node_evicted", "completed", "node_evict_failed"]
    rest = await writer.list("tnt_a", "speaker", "spkr_01A", limit=3, cursor=page.next_cursor)
    assert [e["event"] for e in rest.items] == ["artifact_deleted", "requested"]
    assert not rest.has_more
    everything = await writer.list("tnt_a", limit=100)
    assert len(everything.items) == 6
    with pytest.raises(ScaiError):
        await writer.list("tnt_a", "speaker", "spkr_01B", limit=3, cursor=page.next_cursor)
    with pytest.raises(ValueError):
        await writer.append("purged", "tnt_a", "speaker", "spkr_01A", "usr_a", "user")
