"""Usage recording and Redis counters against real Postgres and Redis (platform §9.1-§9.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from scaicommon.periods import (
    period_bounds,
    period_end,
    period_key,
    period_start,
    seconds_until_end,
)
from scaicommon.pricing import Pricing, format_money, parse_money
from scaicommon.principal import ModulePermissions, Principal
from scaicommon.timefmt import utcnow
from scaicommon.usage import UsageRecorder, UsageSubject, counter_key

SCHEMA = "scaiecho"
PERMS = ModulePermissions("scaiecho", frozenset({"scaiecho:admin"}), frozenset())


def caller(tenant: str = "tnt_a", user: str = "usr_a") -> Principal:
    return Principal(
        user_id=user,
        tenant_id=tenant,
        module=PERMS,
        auth_kind="api_key",
        request_id="req_0123456789abcdef01234567",
        token="sgk_secretsecret",
        partner_id="prt_x",
        api_key_id="apikey_01TEST",
    )


# --- periods ---------------------------------------------------------------------------------


def test_period_keys_and_utc_boundaries() -> None:
    at = datetime(2026, 4, 22, 23, 59, 59, 999000, tzinfo=UTC)
    assert period_key("day", at) == "d20260422"
    assert period_key("month", at) == "m202604"
    assert period_bounds("day", at) == (
        datetime(2026, 4, 22, tzinfo=UTC),
        datetime(2026, 4, 23, tzinfo=UTC),
    )
    assert period_bounds("month", at) == (
        datetime(2026, 4, 1, tzinfo=UTC),
        datetime(2026, 5, 1, tzinfo=UTC),
    )
    # December rolls into next year; a leap February ends on the 29th.
    assert period_end("month", datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert period_end("day", datetime(2028, 2, 28, 12, tzinfo=UTC)) == datetime(
        2028, 2, 29, tzinfo=UTC
    )
    # An offset timestamp is normalised to UTC first: 01:30+02:00 is the previous UTC day.
    from datetime import timezone

    local = datetime(2026, 5, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_key("day", local) == "d20260430"
    assert period_key("month", local) == "m202604"
    assert period_start("month", local) == datetime(2026, 4, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        period_key("day", datetime(2026, 1, 1))  # naive


def test_seconds_until_end() -> None:
    assert seconds_until_end("day", datetime(2026, 4, 22, 23, 59, 0, tzinfo=UTC)) == 60
    assert seconds_until_end("day", datetime(2026, 4, 22, 23, 59, 59, 500000, tzinfo=UTC)) == 1
    assert seconds_until_end("month", datetime(2026, 12, 31, 0, 0, tzinfo=UTC)) == 86400


# --- pricing ---------------------------------------------------------------------------------


def test_pricing_rounds_half_up_to_six_places() -> None:
    echo = Pricing.per_audio_minute("0.006", "0.012")
    assert echo.cost(90_000, "A") == Decimal("0.009")
    assert echo.cost(50, "A") == Decimal("0.000005")
    assert echo.cost(25, "A") == Decimal("0.000003")  # 0.0000025 → half-up, not to even
    assert echo.cost(60_000, None) == Decimal("0.012")  # the higher of A and B
    speak = Pricing.per_1k_chars("0.30", "0.15")
    assert speak.cost(1234, "B") == Decimal("0.185100")
    assert speak.price(None) == Decimal("0.30")
    assert format_money(Decimal("0.0072750")) == "0.007275"
    assert format_money(Decimal("10.000000")) == "10"
    assert format_money(Decimal(0)) == "0"
    for bad in ("-1", "abc", "0.0000001", "NaN"):
        with pytest.raises(ValueError):
            parse_money(bad)
    with pytest.raises(ValueError):
        parse_money(0.1)  # type: ignore[arg-type]


# --- recording and counters ------------------------------------------------------------------


async def test_record_inserts_row_and_used_rebuilds_then_counts(
    pool: AsyncConnectionPool[Any], rds: aioredis.Redis
) -> None:
    recorder = UsageRecorder(
        pool, rds, "scaiecho", pricing=Pricing.per_audio_minute("0.006", "0.012")
    )
    first = await recorder.record(
        caller(),
        operation="transcribe.batch",
        backend="A",
        unit="audio_ms",
        units=90_000,
        node_id="node-1",
        engine="faster-whisper",
        latency_ms=321,
        job_id=None,
    )
    assert first.id.startswith("usage_")
    assert (first.tenant_id, first.user_id, first.partner_id, first.api_key_id) == (
        "tnt_a",
        "usr_a",
        "prt_x",
        "apikey_01TEST",
    )
    assert first.cost == Decimal("0.009")
    assert first.request_id == "req_0123456789abcdef01234567"
    assert first.to_dict()["cost"] == "0.009"

    now = first.created_at
    tenant_month = counter_key("scaiecho", "tnt_a", None, "month", now, "audio_ms")
    assert tenant_month == f"scai:scaiecho:usage:tnt_a:{period_key('month', now)}:audio_ms"
    assert counter_key("scaiecho", "tnt_a", "usr_a", "day", now, "chars") == (
        f"scai:scaiecho:usage:tnt_a:user:usr_a:{period_key('day', now)}:chars"
    )
    # Nothing existed, so the Lua script created nothing.
    assert await rds.exists(tenant_month) == 0

    assert await recorder.used("tnt_a", None, "month", "audio_ms", at=now) == 90_000
    assert int(await rds.get(tenant_month)) == 90_000
    ttl = await rds.ttl(tenant_month)
    assert 39 * 86400 < ttl <= 40 * 86400
    day_key = counter_key("scaiecho", "tnt_a", None, "day", now, "audio_ms")
    assert await recorder.used("tnt_a", None, "day", "audio_ms", at=now) == 90_000
    assert 86400 < await rds.ttl(day_key) <= 2 * 86400

    # Now the tenant keys exist: the next record increments them; the user keys stay absent.
    await recorder.record(
        caller(),
        operation="transcribe.batch",
        backend="B",
        unit="audio_ms",
        units=500,
        status="failure",
        error_code="BACKEND_ERROR",
    )
    assert int(await rds.get(tenant_month)) == 90_500
    user_month = counter_key("scaiecho", "tnt_a", "usr_a", "month", now, "audio_ms")
    assert await rds.exists(user_month) == 0
    assert await recorder.used("tnt_a", "usr_a", "month", "audio_ms", at=now) == 90_500
    # cost: 0.009 + 500 ms on B at 0.012/min = 0.0001
    assert await recorder.used("tnt_a", None, "month", "cost_micros", at=now) == 9_100


async def test_user_and_tenant_scopes(pool: AsyncConnectionPool[Any], rds: aioredis.Redis) -> None:
    recorder = UsageRecorder(pool, rds, "scaispeak")
    await recorder.record(
        caller(user="usr_a"), operation="speak.batch", backend="A", unit="chars", units=10
    )
    await recorder.record(
        UsageSubject("tnt_a", "usr_b"),
        operation="speak.job",
        backend="A",
        unit="chars",
        units=5,
        job_id="job_01X",
    )
    await recorder.record(
        caller(tenant="tnt_b"), operation="speak.batch", backend="A", unit="chars", units=1000
    )
    assert await recorder.used("tnt_a", None, "day", "chars") == 15
    assert await recorder.used("tnt_a", "usr_a", "day", "chars") == 10
    assert await recorder.used("tnt_a", "usr_b", "month", "chars") == 5
    assert await recorder.used("tnt_a", "usr_c", "month", "chars") == 0
    assert await recorder.used("tnt_a", None, "month", "audio_ms") == 0


async def test_rebuild_uses_utc_period_boundaries(
    pool: AsyncConnectionPool[Any], rds: aioredis.Redis
) -> None:
    async with pool.connection() as conn:
        for row_id, created_at, units in (
            ("usage_1", "2026-03-31T23:59:59.999+00:00", 7),
            ("usage_2", "2026-04-01T00:00:00+00:00", 11),
            ("usage_3", "2026-04-30T23:59:59.999999+00:00", 13),
            ("usage_4", "2026-05-01T01:30:00+02:00", 17),  # 23:30Z on 30 April
        ):
            await conn.execute(
                "INSERT INTO usage_records (id, created_at, tenant_id, user_id, operation,"
                " backend, unit, units, cost, status, request_id) VALUES (%s, %s, 'tnt_a',"
                " 'usr_a', 'speak.batch', 'A', 'chars', %s, 0.5, 'success', 'req_x')",
                (row_id, created_at, units),
            )
    recorder = UsageRecorder(pool, rds, "scaispeak")
    april = datetime(2026, 4, 15, tzinfo=UTC)
    assert await recorder.used("tnt_a", None, "month", "chars", at=april) == 41
    assert (
        await recorder.used("tnt_a", None, "month", "chars", at=datetime(2026, 3, 1, tzinfo=UTC))
        == 7
    )
    assert (
        await recorder.used(
            "tnt_a", "usr_a", "day", "chars", at=datetime(2026, 4, 30, 12, tzinfo=UTC)
        )
        == 30
    )
    assert await recorder.used("tnt_a", None, "month", "cost_micros", at=april) == 1_500_000
    assert await rds.exists("scai:scaispeak:usage:tnt_a:m202604:chars") == 1


async def test_redis_restart_never_resets_usage(
    pool: AsyncConnectionPool[Any], local_redis: Any
) -> None:
    client = aioredis.Redis.from_url(local_redis.url)
    try:
        recorder = UsageRecorder(pool, client, "scaiecho")
        await recorder.record(
            caller(),
            operation="transcribe.stream",
            backend="A",
            unit="audio_ms",
            units=4_000,
            session_id="sess_01X",
        )
        assert await recorder.used("tnt_a", None, "month", "audio_ms") == 4_000
        await recorder.record(
            caller(), operation="transcribe.batch", backend="A", unit="audio_ms", units=1_000
        )
        assert await recorder.used("tnt_a", None, "month", "audio_ms") == 5_000

        local_redis.stop()
        local_redis.start()  # keeps nothing: every counter is gone
        key = counter_key("scaiecho", "tnt_a", None, "month", utcnow(), "audio_ms")
        fresh = aioredis.Redis.from_url(local_redis.url)
        try:
            assert await fresh.exists(key) == 0
            assert await recorder.used("tnt_a", None, "month", "audio_ms") == 5_000
            assert int(await fresh.get(key)) == 5_000  # rebuilt into Redis, not just read
            # The Lua script is loaded again on the new server and bumps the rebuilt key.
            await recorder.record(
                caller(), operation="transcribe.batch", backend="A", unit="audio_ms", units=100
            )
            assert int(await fresh.get(key)) == 5_100
        finally:
            await fresh.aclose()
    finally:
        await client.aclose()


async def test_redis_down_records_and_reads_from_postgres(
    pool: AsyncConnectionPool[Any], local_redis: Any
) -> None:
    client = aioredis.Redis.from_url(local_redis.url, socket_connect_timeout=1)
    try:
        recorder = UsageRecorder(pool, client, "scaiecho")
        local_redis.stop()
        record = await recorder.record(
            caller(), operation="transcribe.batch", backend="A", unit="audio_ms", units=250
        )
        assert record.units == 250
        assert await recorder.used("tnt_a", "usr_a", "day", "audio_ms") == 250
    finally:
        await client.aclose()


async def test_record_rejects_bad_input(
    pool: AsyncConnectionPool[Any], rds: aioredis.Redis
) -> None:
    recorder = UsageRecorder(pool, rds, "scaiecho", pricing=Pricing.per_audio_minute("0", "0"))
    base: dict[str, Any] = {
        "operation": "transcribe.batch",
        "backend": "A",
        "unit": "audio_ms",
        "units": 1,
    }
    for override in (
        {"backend": "C"},
        {"unit": "bytes"},
        {"units": -1},
        {"status": "ok"},
        {"unit": "chars"},
    ):
        with pytest.raises(ValueError):
            await recorder.record(caller(), **{**base, **override})
    with pytest.raises(ValueError):
        await recorder.record(UsageSubject("tnt:a", "usr_a"), **base)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM usage_records")
        assert (await cur.fetchone()) == (0,)


async def test_list_records_and_totals(pool: AsyncConnectionPool[Any], rds: aioredis.Redis) -> None:
    recorder = UsageRecorder(pool, rds, "scaiecho")
    for units, backend, op in (
        (100, "A", "transcribe.batch"),
        (200, "B", "transcribe.stream"),
        (300, "A", "transcribe.batch"),
    ):
        await recorder.record(caller(), operation=op, backend=backend, unit="audio_ms", units=units)
    await recorder.record(
        caller(tenant="tnt_b"),
        operation="transcribe.batch",
        backend="A",
        unit="audio_ms",
        units=999,
    )
    first = await recorder.list_records("tnt_a", limit=2)
    assert [r["units"] for r in first.items] == [300, 200] and first.has_more
    assert first.items[0]["created_at"].endswith("Z")
    second = await recorder.list_records("tnt_a", limit=2, cursor=first.next_cursor)
    assert [r["units"] for r in second.items] == [100]
    assert (second.has_more, second.next_cursor) == (False, None)
    only_b = await recorder.list_records("tnt_a", limit=10, filters={"backend": "B"})
    assert [r["units"] for r in only_b.items] == [200]

    start, end = period_bounds("month", utcnow())
    totals = await recorder.totals("tnt_a", start, end, group_by="backend")
    assert (totals.units, totals.requests) == (600, 3)
    assert {k: v.units for k, v in totals.groups.items()} == {"A": 400, "B": 200}
    by_day = await recorder.totals("tnt_a", start, end, group_by="day")
    assert list(by_day.groups) == [utcnow().strftime("%Y-%m-%d")]
    with pytest.raises(psycopg.Error):
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO usage_records (id) VALUES ('x')")
