"""Budget rows, the admission guard and the budgets CLI (platform §9.2, §9.4, §3.1)."""

from __future__ import annotations

import argparse
import io
import json
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from scaicommon.budgets_cli import add_budgets_parser, run_budgets
from scaicommon.errors import ScaiError
from scaicommon.periods import period_end, seconds_until_end
from scaicommon.principal import ModulePermissions, Principal
from scaicommon.timefmt import format_ts, utcnow
from scaicommon.usage import BudgetGuard, BudgetStore, Pricing, UsageRecorder

SCHEMA = "scaispeak"
PERMS = ModulePermissions("scaispeak", frozenset({"scaispeak:admin"}), frozenset())


def caller(tenant: str = "tnt_a", user: str = "usr_a") -> Principal:
    return Principal(
        user_id=user,
        tenant_id=tenant,
        module=PERMS,
        auth_kind="jwt",
        request_id="req_0123456789abcdef01234567",
        token="eyJ.secret",
    )


PRICING = Pricing.per_1k_chars("1.00", "2.50")


@pytest.fixture
def recorder(pool: AsyncConnectionPool[Any], rds: aioredis.Redis) -> UsageRecorder:
    return UsageRecorder(pool, rds, "scaispeak", pricing=PRICING)


async def spend(
    recorder: UsageRecorder, chars: int, *, user: str = "usr_a", backend: str = "A"
) -> None:
    await recorder.record(
        caller(user=user), operation="speak.batch", backend=backend, unit="chars", units=chars
    )


async def rejection(
    guard: BudgetGuard, estimate: int, *, user: str = "usr_a", backend: str | None = "A"
) -> ScaiError:
    with pytest.raises(ScaiError) as info:
        await guard.check(caller(user=user), "chars", estimate, backend)
    return info.value


# --- store -----------------------------------------------------------------------------------


async def test_store_upserts_on_scope_and_lists(pool: AsyncConnectionPool[Any]) -> None:
    store = BudgetStore(pool)
    first = await store.set("tnt_a", None, "month", "chars", 1000, "usr_admin")
    assert first.id.startswith("budget_")
    again = await store.set("tnt_a", None, "month", "chars", "2000", "usr_other")
    assert again.id == first.id
    assert (again.amount, again.updated_by) == (Decimal(2000), "usr_other")
    assert again.updated_at >= first.updated_at
    user_row = await store.set("tnt_a", "usr_a", "month", "chars", 10, "usr_admin")
    assert user_row.id != first.id
    day_row = await store.set("tnt_a", None, "day", "chars", 50, "usr_admin")
    cost_row = await store.set("tnt_b", None, "month", "cost", "12.5", "usr_admin")
    assert cost_row.to_dict()["amount"] == "12.5"
    assert first.to_dict()["amount"] == 1000

    assert [b.id for b in await store.list("tnt_a")] == [day_row.id, first.id, user_row.id]
    assert len(await store.list()) == 4
    got = await store.get("tnt_a", None, "month", "chars")
    assert got is not None and got.id == first.id
    assert await store.get("tnt_a", "usr_b", "month", "chars") is None
    assert [b.id for b in await store.rows_for("tnt_a", "usr_b", "chars")] == [day_row.id, first.id]
    assert len(await store.rows_for("tnt_a", "usr_a", ("chars", "cost"))) == 3

    assert await store.delete(user_row.id)
    assert not await store.delete(user_row.id)
    assert await store.delete_scope("tnt_a", None, "day", "chars")
    assert [b.id for b in await store.list("tnt_a")] == [first.id]


BAD_ROWS: list[tuple[tuple[str, str | None, str, str, Any], str]] = [
    (("tnt:a", None, "month", "chars", 1), "tenant_id"),
    (("tnt_a", "usr a", "month", "chars", 1), "user_id"),
    (("tnt_a", None, "week", "chars", 1), "period"),
    (("tnt_a", None, "month", "bytes", 1), "unit"),
    (("tnt_a", None, "month", "chars", -1), "amount"),
    (("tnt_a", None, "month", "chars", "1.5"), "amount"),
    (("tnt_a", None, "month", "cost", "0.0000001"), "amount"),
    (("tnt_a", None, "month", "cost", "lots"), "amount"),
    (("tnt_a", None, "month", "audio_ms", "1e30"), "amount"),
]


async def test_store_validates(pool: AsyncConnectionPool[Any]) -> None:
    store = BudgetStore(pool)
    for args, field in BAD_ROWS:
        with pytest.raises(ScaiError) as info:
            tenant, user, period, unit, amount = args
            await store.set(tenant, user, period, unit, amount, "usr_admin")
        assert info.value.code == "VALIDATION_ERROR", args
        assert info.value.details is not None
        assert info.value.details[0]["field"] == field, args
    assert await store.list() == []


# --- guard: quotas ---------------------------------------------------------------------------


async def test_quota_boundary_is_inclusive(
    pool: AsyncConnectionPool[Any], recorder: UsageRecorder
) -> None:
    store = BudgetStore(pool)
    await store.set("tnt_a", None, "month", "chars", 1000, "usr_admin")
    guard = BudgetGuard(store, recorder, PRICING)
    await guard.check(caller(), "chars", 1000, "A")  # nothing used yet
    await spend(recorder, 600)
    await guard.check(caller(), "chars", 400, "A")  # used + estimate == amount passes
    error = await rejection(guard, 401)
    now = utcnow()
    assert error.code == "QUOTA_EXCEEDED"
    assert error.http_status == 429
    assert error.extras == {
        "unit": "chars",
        "limit": 1000,
        "used": 600,
        "period": "month",
        "period_ends_at": format_ts(period_end("month", now)),
    }
    assert error.retry_after is not None
    assert abs(error.retry_after - seconds_until_end("month", now)) <= 2
    assert error.to_dict()["retry_after"] == error.retry_after


async def test_user_and_tenant_rows_both_enforced(
    pool: AsyncConnectionPool[Any], recorder: UsageRecorder
) -> None:
    store = BudgetStore(pool)
    await store.set("tnt_a", None, "month", "chars", 10_000, "usr_admin")
    await store.set("tnt_a", "usr_a", "day", "chars", 500, "usr_admin")
    guard = BudgetGuard(store, recorder, PRICING)
    await spend(recorder, 400, user="usr_a")

    await guard.check(caller(user="usr_a"), "chars", 100, "A")
    error = await rejection(guard, 101, user="usr_a")
    assert (error.extras["period"], error.extras["limit"], error.extras["used"]) == (
        "day",
        500,
        400,
    )
    assert error.retry_after is not None and error.retry_after <= 86400

    # usr_b is not bound by usr_a's row, but the tenant row counts everyone's usage.
    await guard.check(caller(user="usr_b"), "chars", 9_600, "A")
    error = await rejection(guard, 9_601, user="usr_b")
    assert (error.extras["period"], error.extras["limit"], error.extras["used"]) == (
        "month",
        10_000,
        400,
    )


async def test_day_and_month_both_exceeded_reports_the_month(
    pool: AsyncConnectionPool[Any], recorder: UsageRecorder
) -> None:
    store = BudgetStore(pool)
    await store.set("tnt_a", None, "day", "chars", 100, "usr_admin")
    await store.set("tnt_a", None, "month", "chars", 150, "usr_admin")
    await spend(recorder, 100)
    guard = BudgetGuard(store, recorder, PRICING)
    await guard.check(caller(), "chars", 0, "A")  # a stream open: estimate 0 at the limit
    error = await rejection(guard, 60)
    assert error.extras["period"] == "month"  # retrying after the day ends would still fail
    error = await rejection(guard, 1)
    assert error.extras["period"] == "day"


async def test_default_monthly_quota(
    pool: AsyncConnectionPool[Any], recorder: UsageRecorder
) -> None:
    store = BudgetStore(pool)
    rejected: list[tuple[str, str]] = []
    guard = BudgetGuard(
        store,
        recorder,
        PRICING,
        default_monthly_limit=100,
        on_reject=lambda unit, kind: rejected.append((unit, kind)),
    )
    await guard.check(caller(), "chars", 100, "A")
    error = await rejection(guard, 101)
    assert (error.extras["limit"], error.extras["period"]) == (100, "month")
    assert rejected == [("chars", "quota")]
    # A per-user row does not replace the tenant default; a tenant row does.
    await store.set("tnt_a", "usr_a", "month", "chars", 5_000, "usr_admin")
    await rejection(guard, 101)
    await store.set("tnt_a", None, "month", "chars", 1_000, "usr_admin")
    await guard.check(caller(), "chars", 1_000, "A")
    # 0 / None: no default limit at all.
    for default in (0, None):
        unlimited = BudgetGuard(store, recorder, PRICING, default_monthly_limit=default)
        await unlimited.check(caller(tenant="tnt_other"), "chars", 10**9, None)


# --- guard: cost budgets ---------------------------------------------------------------------


async def test_cost_budget_uses_backend_price_or_the_higher(
    pool: AsyncConnectionPool[Any], recorder: UsageRecorder
) -> None:
    store = BudgetStore(pool)
    await store.set("tnt_a", None, "month", "cost", "0.01", "usr_admin")
    rejected: list[tuple[str, str]] = []
    guard = BudgetGuard(
        store, recorder, PRICING, on_reject=lambda unit, kind: rejected.append((unit, kind))
    )
    await spend(recorder, 2, backend="A")  # 2 chars at 1.00 per 1k = 0.002

    await guard.check(caller(), "chars", 3, "A")  # 0.002 + 0.003
    await guard.check(caller(), "chars", 3, None)  # 0.002 + 3 × 2.50/1k = 0.0095
    await guard.check(caller(), "chars", 4, "A")  # 0.002 + 0.004
    await guard.check(caller(), "chars", 8, "A")  # 0.002 + 0.008 == 0.01 exactly
    error = await rejection(guard, 4, backend=None)  # 0.002 + 0.01 > 0.01
    assert error.code == "BUDGET_EXCEEDED"
    assert error.http_status == 402
    assert error.retry_after is None
    assert "retry_after" not in error.to_dict()
    assert error.extras == {
        "unit": "cost",
        "limit": "0.01",
        "used": "0.002",
        "period": "month",
        "period_ends_at": format_ts(period_end("month", utcnow())),
    }
    await rejection(guard, 4, backend="B")
    assert rejected == [("cost", "budget"), ("cost", "budget")]


async def test_budget_wins_over_quota_and_no_rows_allows_everything(
    pool: AsyncConnectionPool[Any], recorder: UsageRecorder
) -> None:
    store = BudgetStore(pool)
    guard = BudgetGuard(store, recorder, PRICING)
    await guard.check(caller(), "chars", 10**9, None)
    await store.set("tnt_a", None, "month", "chars", 10, "usr_admin")
    await store.set("tnt_a", "usr_a", "month", "cost", "0", "usr_admin")
    error = await rejection(guard, 11)
    assert error.code == "BUDGET_EXCEEDED"
    with pytest.raises(ValueError):
        await guard.check(caller(), "audio_ms", 1, "A")  # pricing is for chars
    with pytest.raises(ValueError):
        await guard.check(caller(), "chars", -1, "A")


# --- CLI -------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scaispeak")
    add_budgets_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def cli(pg_dsn: str, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_budgets(
        parse(argv), dsn=pg_dsn, schema=SCHEMA, updated_by="cli:test", out=out, err=err
    )
    return code, out.getvalue(), err.getvalue()


async def test_budgets_cli_set_list_delete(
    pg_dsn: str, pool: AsyncConnectionPool[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(
        pg_dsn,
        [
            "budgets",
            "set",
            "--tenant",
            "tnt_a",
            "--period",
            "month",
            "--unit",
            "chars",
            "--amount",
            "5000",
        ],
    )
    assert (code, err) == (0, "")
    row = json.loads(out)
    assert row["id"].startswith("budget_")
    assert {
        k: row[k] for k in ("tenant_id", "user_id", "period", "unit", "amount", "updated_by")
    } == {
        "tenant_id": "tnt_a",
        "user_id": None,
        "period": "month",
        "unit": "chars",
        "amount": 5000,
        "updated_by": "cli:test",
    }
    code, out, _ = await cli(
        pg_dsn,
        [
            "budgets",
            "set",
            "--tenant",
            "tnt_b",
            "--user",
            "usr_x",
            "--period",
            "day",
            "--unit",
            "cost",
            "--amount",
            "1.25",
        ],
    )
    assert code == 0 and json.loads(out)["amount"] == "1.25"

    # Default streams: run_budgets writes to stdout when no stream is given.
    assert (
        await run_budgets(
            parse(["budgets", "list", "--tenant", "tnt_a"]),
            dsn=pg_dsn,
            schema=SCHEMA,
            updated_by="cli:test",
        )
        == 0
    )
    listed = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in listed["items"]] == [row["id"]]
    code, out, _ = await cli(pg_dsn, ["budgets", "list"])
    assert code == 0 and len(json.loads(out)["items"]) == 2

    code, out, _ = await cli(pg_dsn, ["budgets", "delete", row["id"]])
    assert code == 0 and json.loads(out) == {"id": row["id"], "deleted": True}
    code, out, err = await cli(pg_dsn, ["budgets", "delete", row["id"]])
    assert (code, out) == (1, "") and row["id"] in err and err.count("\n") == 1
    assert await BudgetStore(pool).get("tnt_a", None, "month", "chars") is None


BAD_ARGV = [
    ["--tenant", "tnt_a", "--period", "week", "--unit", "chars", "--amount", "1"],
    ["--tenant", "tnt_a", "--period", "day", "--unit", "chars", "--amount", "ten"],
    ["--tenant", "tnt_a", "--period", "day", "--unit", "cost", "--amount", "-1"],
    ["--tenant", "tnt_a", "--period", "day", "--unit", "bytes", "--amount", "1"],
    ["--tenant", "t:a", "--period", "day", "--unit", "chars", "--amount", "1"],
]


async def test_budgets_cli_errors(pg_dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    for tail in BAD_ARGV:  # bad input: exit 2, one line on stderr
        code, out, err = await cli(pg_dsn, ["budgets", "set", *tail])
        assert (code, out) == (2, ""), tail
        assert err.startswith("budgets: ") and err.count("\n") == 1, err
    assert await BudgetStore(pool).list() == []
    # Database error (a schema that was never migrated): exit 1, one line.
    out_io, err_io = io.StringIO(), io.StringIO()
    code = await run_budgets(
        parse(["budgets", "list"]),
        dsn=pg_dsn,
        schema="not_migrated",
        updated_by="cli:test",
        out=out_io,
        err=err_io,
    )
    assert (code, out_io.getvalue()) == (1, "")
    assert "budgets" in err_io.getvalue() and err_io.getvalue().count("\n") == 1
