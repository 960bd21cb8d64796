"""Usage metering (platform §9): the ``usage_records`` writer and the Redis counters.

Postgres is the truth. Recording inserts one row, then a single Lua script ``INCRBY``\\s the day
and month counters of the tenant and the user, *only where the counter key already exists*.
Reading a counter that is missing rebuilds it from ``SUM`` over ``usage_records`` for the UTC
period and stores it with ``SET … NX EX``, so a Redis restart never resets anyone's usage.

Counter keys (integers; money in ``cost_micros``)::

    scai:{module}:usage:{tenant_id}:{period_key}:{unit}
    scai:{module}:usage:{tenant_id}:user:{user_id}:{period_key}:{unit}

Known, accepted imprecision: a rebuild that races a recording (the row commits between the
rebuild's ``SUM`` and its ``SET``, or between a recording's commit and its ``INCRBY``) can leave
the counter off by that one recording until the key expires. Admission has no reservation
anyway (§9.4).

The budget repository and the guard live in :mod:`scaicommon.budgets` and are re-exported here
(``scaicommon.usage.BudgetStore``, ``scaicommon.usage.BudgetGuard``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import redis.asyncio as aioredis
import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import RedisError

from scaicommon.budgets import Budget, BudgetGuard, BudgetStore, UsageCounter
from scaicommon.ids import is_valid_external_id, new_id
from scaicommon.pagination import FilterSpec, Page, fetch_tenant_page
from scaicommon.periods import COUNTER_TTL_S, Period, period_bounds, period_key
from scaicommon.pricing import Pricing, format_money, to_micros
from scaicommon.principal import Principal
from scaicommon.requestid import current_request_id
from scaicommon.timefmt import format_ts, utcnow

__all__ = [
    "COUNTER_UNITS",
    "Budget",
    "BudgetGuard",
    "BudgetStore",
    "Pricing",
    "UsageCounter",
    "UsageRecord",
    "UsageRecorder",
    "UsageSubject",
    "UsageTotals",
    "counter_key",
]

log = structlog.get_logger("scaicommon.usage")

RECORD_UNITS: Final = ("audio_ms", "chars")
COUNTER_UNITS: Final = ("audio_ms", "chars", "cost_micros")
GroupBy = Literal["backend", "operation", "user_id", "status", "engine", "day"]

# KEYS = counter keys, ARGV[i] = increment for KEYS[i]. Only keys that exist are touched, so
# a missing counter is always rebuilt from Postgres rather than started from zero.
_INCR_EXISTING = """
local touched = 0
for i, key in ipairs(KEYS) do
  local inc = tonumber(ARGV[i])
  if inc ~= 0 and redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, inc)
    touched = touched + 1
  end
end
return touched
"""

_LIST_FILTERS: Final = {
    "user_id": FilterSpec("user_id"),
    "operation": FilterSpec("operation"),
    "backend": FilterSpec("backend"),
    "status": FilterSpec("status"),
    "job_id": FilterSpec("job_id"),
    "session_id": FilterSpec("session_id"),
    "since": FilterSpec("created_at", ">="),
    "until": FilterSpec("created_at", "<"),
}

_GROUP_EXPR: Final = {
    "backend": "backend",
    "operation": "operation",
    "user_id": "user_id",
    "status": "status",
    "engine": "COALESCE(engine, '')",
    "day": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


def _check_id(value: str, what: str) -> str:
    if not is_valid_external_id(value):
        raise ValueError(f"invalid {what} for a counter key: {value!r}")
    return value


def counter_key(
    module: str, tenant_id: str, user_id: str | None, period: Period, at: datetime, unit: str
) -> str:
    """The Redis counter key of a tenant (``user_id`` None) or a user, for a period and unit."""
    if unit not in COUNTER_UNITS:
        raise ValueError(f"counter unit must be one of {COUNTER_UNITS}, got {unit!r}")
    scope = _check_id(tenant_id, "tenant id")
    if user_id is not None:
        scope += ":user:" + _check_id(user_id, "user id")
    return f"scai:{module}:usage:{scope}:{period_key(period, at)}:{unit}"


@dataclass(frozen=True)
class UsageSubject:
    """Who is billed: the principal fields of a usage row (jobs rebuild it from their row)."""

    tenant_id: str
    user_id: str
    partner_id: str | None = None
    api_key_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> UsageSubject:
        """The subject of an authenticated caller (raises when it has no tenant)."""
        return cls(
            tenant_id=principal.require_tenant(),
            user_id=principal.user_id,
            partner_id=principal.partner_id,
            api_key_id=principal.api_key_id,
        )


@dataclass(frozen=True)
class UsageRecord:
    """One ``usage_records`` row."""

    id: str
    created_at: datetime
    tenant_id: str
    partner_id: str | None
    user_id: str
    api_key_id: str | None
    operation: str
    backend: str
    node_id: str | None
    engine: str | None
    unit: str
    units: int
    output_audio_ms: int | None
    cost: Decimal
    latency_ms: int | None
    status: str
    error_code: str | None
    request_id: str
    job_id: str | None
    session_id: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UsageRecord:
        """Build from a ``dict_row``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: ``created_at`` ISO Z, ``cost`` a decimal string."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["created_at"] = format_ts(self.created_at)
        out["cost"] = format_money(self.cost)
        return out


@dataclass
class UsageTotals:
    """Sums over ``usage_records``: units, row count and cost; optionally per group."""

    units: int = 0
    requests: int = 0
    cost: Decimal = Decimal(0)
    groups: dict[str, UsageTotals] = field(default_factory=dict)


class UsageRecorder:
    """Writes usage rows, keeps the Redis counters and answers "how much was used".

    ``pricing`` prices each row (``cost``); without it rows cost 0. ``on_record(record)`` is
    called after each row is written (for the ``<m>_usage_units_total`` counter).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        redis: aioredis.Redis,
        module: str,
        *,
        pricing: Pricing | None = None,
        on_record: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self.module = module
        self.pricing = pricing
        self._on_record = on_record
        self._incr = redis.register_script(_INCR_EXISTING)

    async def record(
        self,
        subject: Principal | UsageSubject,
        *,
        operation: str,
        backend: str,
        unit: str,
        units: int,
        status: str = "success",
        node_id: str | None = None,
        engine: str | None = None,
        output_audio_ms: int | None = None,
        latency_ms: int | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
        session_id: str | None = None,
    ) -> UsageRecord:
        """Insert one usage row (the truth), then bump the existing Redis counters.

        ``status`` is ``success`` or ``failure``; a call that failed before producing anything
        records ``units=0``. ``request_id`` defaults to the principal's, else the current
        one. A Redis failure is logged (``usage_counter_update_failed``) and never fails the call.
        """
        if isinstance(subject, Principal):
            who = UsageSubject.of(subject)
            request_id = request_id or subject.request_id
        else:
            who = subject
        if unit not in RECORD_UNITS:
            raise ValueError(f"unit must be one of {RECORD_UNITS}, got {unit!r}")
        if backend not in ("A", "B"):
            raise ValueError(f"backend must be 'A' or 'B', got {backend!r}")
        if status not in ("success", "failure"):
            raise ValueError(f"status must be 'success' or 'failure', got {status!r}")
        if units < 0:
            raise ValueError("units must be >= 0")
        _check_id(who.tenant_id, "tenant id")
        _check_id(who.user_id, "user id")
        cost = Decimal(0)
        if self.pricing is not None:
            if self.pricing.unit != unit:
                raise ValueError(f"pricing is for {self.pricing.unit!r}, not {unit!r}")
            cost = self.pricing.cost(units, backend)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "INSERT INTO usage_records (id, tenant_id, partner_id, user_id, api_key_id,"
                " operation, backend, node_id, engine, unit, units, output_audio_ms, cost,"
                " latency_ms, status, error_code, request_id, job_id, session_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s) RETURNING *",
                (
                    new_id("usage"),
                    who.tenant_id,
                    who.partner_id,
                    who.user_id,
                    who.api_key_id,
                    operation,
                    backend,
                    node_id,
                    engine,
                    unit,
                    units,
                    output_audio_ms,
                    cost,
                    latency_ms,
                    status,
                    error_code,
                    request_id or current_request_id(),
                    job_id,
                    session_id,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        record = UsageRecord.from_row(row)
        await self._bump(record)
        if self._on_record is not None:
            self._on_record(record)
        return record

    async def _bump(self, record: UsageRecord) -> None:
        keys: list[str] = []
        increments: list[int] = []
        micros = to_micros(record.cost)
        for user_id in (None, record.user_id):
            for period in ("day", "month"):
                for unit, amount in ((record.unit, record.units), ("cost_micros", micros)):
                    keys.append(
                        counter_key(
                            self.module,
                            record.tenant_id,
                            user_id,
                            period,
                            record.created_at,
                            unit,
                        )
                    )
                    increments.append(amount)
        try:
            await self._incr(keys=keys, args=increments)
        except RedisError as exc:
            log.warning("usage_counter_update_failed", usage_id=record.id, error=type(exc).__name__)

    async def used(
        self,
        tenant_id: str,
        user_id: str | None,
        period: Period,
        unit: str,
        *,
        at: datetime | None = None,
    ) -> int:
        """Usage of a tenant (``user_id`` None) or user in the UTC period holding ``at`` (now).

        ``unit`` is ``audio_ms``, ``chars`` or ``cost_micros``. A missing counter is rebuilt
        from Postgres and stored with ``SET NX EX``; with Redis down, Postgres answers alone.
        """
        when = at or utcnow()
        key = counter_key(self.module, tenant_id, user_id, period, when, unit)
        try:
            cached = await self._redis.get(key)
        except RedisError as exc:
            log.warning("usage_counter_read_failed", error=type(exc).__name__)
            return await self._sum(tenant_id, user_id, period, unit, when)
        if cached is not None:
            return int(cached)
        total = await self._sum(tenant_id, user_id, period, unit, when)
        try:
            if not await self._redis.set(key, total, nx=True, ex=COUNTER_TTL_S[period]):
                # Another process rebuilt it first (or recorded into it since): use that value.
                current = await self._redis.get(key)
                if current is not None:
                    return int(current)
        except RedisError as exc:
            log.warning("usage_counter_rebuild_failed", error=type(exc).__name__)
        return total

    async def _sum(
        self, tenant_id: str, user_id: str | None, period: Period, unit: str, at: datetime
    ) -> int:
        start, end = period_bounds(period, at)
        if unit == "cost_micros":
            query = "SELECT COALESCE(SUM(cost), 0) FROM usage_records WHERE tenant_id = %s"
            params: list[Any] = [tenant_id]
        else:
            query = (
                "SELECT COALESCE(SUM(units), 0) FROM usage_records"
                " WHERE tenant_id = %s AND unit = %s"
            )
            params = [tenant_id, unit]
        if user_id is not None:
            query += " AND user_id = %s"
            params.append(user_id)
        query += " AND created_at >= %s AND created_at < %s"
        params += [start, end]
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        value = row[0] if row else 0
        return to_micros(Decimal(value)) if unit == "cost_micros" else int(value)

    async def totals(
        self,
        tenant_id: str,
        start: datetime,
        end: datetime,
        *,
        user_id: str | None = None,
        status: str | None = None,
        group_by: GroupBy | None = None,
    ) -> UsageTotals:
        """Units, row count and cost of a tenant (or user) over ``start <= created_at < end``.

        With ``group_by`` (``backend``, ``operation``, ``user_id``, ``status``, ``engine`` or
        ``day`` as ``YYYY-MM-DD`` UTC) the per-group sums are in ``groups`` as well.
        """
        expr = _GROUP_EXPR[group_by] if group_by else "''"
        query = (
            "SELECT {} AS g, COALESCE(SUM(units), 0), COUNT(*), COALESCE(SUM(cost), 0)"
            " FROM usage_records WHERE tenant_id = %s AND created_at >= %s AND created_at < %s"
        )
        params: list[Any] = [tenant_id, start, end]
        if user_id is not None:
            query += " AND user_id = %s"
            params.append(user_id)
        if status is not None:
            query += " AND status = %s"
            params.append(status)
        query += " GROUP BY g ORDER BY g"
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql.SQL(query).format(sql.SQL(expr)), params)
            rows = await cur.fetchall()
        result = UsageTotals()
        for group, units, count, cost in rows:
            result.units += int(units)
            result.requests += int(count)
            result.cost += Decimal(cost)
            if group_by:
                result.groups[str(group)] = UsageTotals(int(units), int(count), Decimal(cost))
        return result

    async def list_records(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> Page[dict[str, Any]]:
        """A page of a tenant's usage rows, newest first (JSON shapes).

        ``filters``: ``user_id``, ``operation``, ``backend``, ``status``, ``job_id``,
        ``session_id``, ``since`` (inclusive), ``until`` (exclusive). Parse ``limit`` with
        :func:`scaicommon.pagination.parse_log_limit` (usage lists: 1..1000, default 100).
        """
        page = await fetch_tenant_page(
            self._pool,
            "usage_records",
            tenant_id=tenant_id,
            filters=filters,
            specs=_LIST_FILTERS,
            limit=limit,
            cursor=cursor,
        )
        return page.map(lambda row: UsageRecord.from_row(row).to_dict())
