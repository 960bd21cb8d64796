"""Budget rows and the admission guard (platform §9.2, §9.4).

One ``budgets`` table holds both kinds of limit, told apart by ``unit``:

- ``audio_ms`` / ``chars`` rows are *quotas*: exceeding one is ``QUOTA_EXCEEDED`` (429) with
  ``retry_after`` up to the end of the period;
- ``cost`` rows are *budgets*: exceeding one is ``BUDGET_EXCEEDED`` (402), no ``retry_after``.

Tenant-wide rows (``user_id`` null) and per-user rows are both enforced, per day and per month.
A request is allowed when ``used + estimate <= amount`` for every matching row. There is no
reservation: concurrent requests may overshoot by at most their own size.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, Protocol

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from scaicommon.errors import ScaiError, validation_error
from scaicommon.ids import is_valid_external_id, new_id
from scaicommon.periods import Period, period_end, seconds_until_end
from scaicommon.pricing import Pricing, format_money, from_micros, parse_money, to_micros
from scaicommon.principal import Principal
from scaicommon.timefmt import format_ts, utcnow

QUOTA_UNITS: Final = ("audio_ms", "chars")
BUDGET_UNITS: Final = ("audio_ms", "chars", "cost")
# numeric(20,6): 14 integer digits.
_MAX_AMOUNT: Final = Decimal(10) ** 14 - 1

RejectionHook = Callable[[str, Literal["quota", "budget"]], None]


class UsageCounter(Protocol):
    """What the guard needs from the usage recorder: the period's usage so far."""

    async def used(
        self,
        tenant_id: str,
        user_id: str | None,
        period: Period,
        unit: str,
        *,
        at: datetime | None = None,
    ) -> int:
        """Units used (``cost_micros`` for money) in the period holding ``at``."""
        ...


@dataclass(frozen=True)
class Budget:
    """One ``budgets`` row."""

    id: str
    tenant_id: str
    user_id: str | None
    period: Period
    unit: str
    amount: Decimal
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Budget:
        """Build from a ``dict_row``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def is_quota(self) -> bool:
        """Whether this is a unit quota (``audio_ms``/``chars``) rather than a cost budget."""
        return self.unit != "cost"

    def amount_json(self) -> int | str:
        """The amount as JSON: an integer for quotas, a decimal string for money."""
        return int(self.amount) if self.is_quota else format_money(self.amount)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the row."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "period": self.period,
            "unit": self.unit,
            "amount": self.amount_json(),
            "created_at": format_ts(self.created_at),
            "updated_at": format_ts(self.updated_at),
            "updated_by": self.updated_by,
        }


def check_budget_scope(tenant_id: str, user_id: str | None, period: str, unit: str) -> None:
    """Validate the scope of a budget row; raises ``VALIDATION_ERROR`` naming the field."""
    if not is_valid_external_id(tenant_id):
        raise validation_error("tenant_id", "not a valid tenant id")
    if user_id is not None and not is_valid_external_id(user_id):
        raise validation_error("user_id", "not a valid user id")
    if period not in ("day", "month"):
        raise validation_error("period", "must be 'day' or 'month'")
    if unit not in BUDGET_UNITS:
        raise validation_error("unit", "must be one of audio_ms, chars, cost")


def parse_amount(unit: str, amount: int | str | Decimal) -> Decimal:
    """Validate an amount: a whole number >= 0 for quotas, money (<= 6 decimals) for ``cost``.

    Raises ``VALIDATION_ERROR`` on field ``amount``.
    """
    try:
        if unit == "cost":
            value = parse_money(amount, name="amount")
        else:
            if isinstance(amount, bool) or not isinstance(amount, int | str | Decimal):
                raise ValueError("not a number")
            value = Decimal(amount.strip() if isinstance(amount, str) else amount)
            if not value.is_finite() or value < 0 or value != value.to_integral_value():
                raise ValueError("not a whole number >= 0")
            value = value.quantize(Decimal(1))
    except (ValueError, InvalidOperation):
        what = "a decimal >= 0 with at most 6 decimals" if unit == "cost" else "an integer >= 0"
        raise validation_error("amount", f"must be {what}") from None
    if value > _MAX_AMOUNT:
        raise validation_error("amount", "is too large")
    return value


class BudgetStore:
    """Repository of ``budgets`` rows (one per tenant, user-or-tenant, period and unit)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def set(
        self,
        tenant_id: str,
        user_id: str | None,
        period: str,
        unit: str,
        amount: int | str | Decimal,
        updated_by: str,
    ) -> Budget:
        """Create or replace the row of this scope; returns it.

        Raises ``VALIDATION_ERROR`` for a bad id, period, unit or amount.
        """
        check_budget_scope(tenant_id, user_id, period, unit)
        value = parse_amount(unit, amount)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "INSERT INTO budgets (id, tenant_id, user_id, period, unit, amount, updated_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (tenant_id, (COALESCE(user_id, '')), period, unit) DO UPDATE"
                " SET amount = EXCLUDED.amount, updated_by = EXCLUDED.updated_by,"
                " updated_at = now()"
                " RETURNING *",
                (new_id("budget"), tenant_id, user_id, period, unit, value, updated_by),
            )
            row = await cur.fetchone()
        assert row is not None
        return Budget.from_row(row)

    async def get(
        self, tenant_id: str, user_id: str | None, period: str, unit: str
    ) -> Budget | None:
        """The row of exactly this scope, or ``None``."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT * FROM budgets WHERE tenant_id = %s"
                " AND COALESCE(user_id, '') = COALESCE(%s::text, '')"
                " AND period = %s AND unit = %s",
                (tenant_id, user_id, period, unit),
            )
            row = await cur.fetchone()
        return Budget.from_row(row) if row else None

    async def get_by_id(self, budget_id: str) -> Budget | None:
        """The row with this id, or ``None``."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM budgets WHERE id = %s", (budget_id,))
            row = await cur.fetchone()
        return Budget.from_row(row) if row else None

    async def list(self, tenant_id: str | None = None) -> builtins.list[Budget]:
        """Every row, or one tenant's, ordered by tenant, user (tenant-wide first), period, unit."""
        query = "SELECT * FROM budgets"
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            query += " WHERE tenant_id = %s"
            params = (tenant_id,)
        query += " ORDER BY tenant_id, user_id NULLS FIRST, period, unit"
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [Budget.from_row(row) for row in rows]

    async def delete(self, budget_id: str) -> bool:
        """Delete a row by id; ``False`` when there was none."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("DELETE FROM budgets WHERE id = %s", (budget_id,))
            return bool(cur.rowcount > 0)

    async def delete_scope(
        self, tenant_id: str, user_id: str | None, period: str, unit: str
    ) -> bool:
        """Delete the row of exactly this scope; ``False`` when there was none."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM budgets WHERE tenant_id = %s"
                " AND COALESCE(user_id, '') = COALESCE(%s::text, '')"
                " AND period = %s AND unit = %s",
                (tenant_id, user_id, period, unit),
            )
            return bool(cur.rowcount > 0)

    async def rows_for(
        self, tenant_id: str, user_id: str | None, unit: str | Sequence[str]
    ) -> builtins.list[Budget]:
        """Rows that bind this caller: tenant-wide rows plus the user's own, of ``unit``(s)."""
        units = [unit] if isinstance(unit, str) else list(unit)
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT * FROM budgets WHERE tenant_id = %s"
                " AND (user_id IS NULL OR user_id = %s::text) AND unit = ANY(%s)"
                " ORDER BY user_id NULLS FIRST, period, unit",
                (tenant_id, user_id, units),
            )
            rows = await cur.fetchall()
        return [Budget.from_row(row) for row in rows]


@dataclass(frozen=True)
class _Limit:
    user_id: str | None
    period: Period
    unit: str
    amount: Decimal


@dataclass(frozen=True)
class _Violation:
    limit: _Limit
    used: int
    ends_at: datetime


class BudgetGuard:
    """Admission check against quotas and budgets (platform §9.4).

    ``default_monthly_limit`` is the module's monthly tenant quota for tenants without any
    tenant-wide row of the unit (``None`` or 0: no default). ``on_reject(unit, kind)`` is called
    on every rejection (for the ``<m>_quota_rejections_total`` counter).
    """

    def __init__(
        self,
        store: BudgetStore,
        counter: UsageCounter,
        pricing: Pricing,
        default_monthly_limit: int | None = None,
        *,
        on_reject: RejectionHook | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._counter = counter
        self._pricing = pricing
        self._default = default_monthly_limit or None
        self._on_reject = on_reject
        self._clock = clock

    async def check(
        self, principal: Principal, unit: str, estimate: int, backend: str | None = None
    ) -> None:
        """Allow the request or raise ``QUOTA_EXCEEDED`` / ``BUDGET_EXCEEDED``.

        ``estimate`` is this request's size in ``unit``; ``backend`` is the resolved backend
        (``None`` before resolution: cost rows then use the higher of the A and B prices).
        """
        await self.check_for(principal.require_tenant(), principal.user_id, unit, estimate, backend)

    async def check_for(
        self,
        tenant_id: str,
        user_id: str | None,
        unit: str,
        estimate: int,
        backend: str | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """:meth:`check` for a tenant and user without a principal (workers, streams)."""
        if unit not in QUOTA_UNITS:
            raise ValueError(f"unit must be audio_ms or chars, got {unit!r}")
        if unit != self._pricing.unit:
            raise ValueError(f"pricing is for {self._pricing.unit!r}, not {unit!r}")
        if estimate < 0:
            raise ValueError("estimate must be >= 0")
        now = at or self._clock()
        limits = await self._limits(tenant_id, user_id, unit)
        if not limits:
            return
        cost_estimate = to_micros(self._pricing.cost(estimate, backend))
        seen: dict[tuple[str | None, str, str], int] = {}
        quota_hits: list[_Violation] = []
        budget_hits: list[_Violation] = []
        for limit in limits:
            counter_unit = "cost_micros" if limit.unit == "cost" else unit
            memo = (limit.user_id, limit.period, counter_unit)
            if memo not in seen:
                seen[memo] = await self._counter.used(
                    tenant_id, limit.user_id, limit.period, counter_unit, at=now
                )
            used = seen[memo]
            if limit.unit == "cost":
                if used + cost_estimate > to_micros(limit.amount):
                    budget_hits.append(_Violation(limit, used, period_end(limit.period, now)))
            elif Decimal(used + estimate) > limit.amount:
                quota_hits.append(_Violation(limit, used, period_end(limit.period, now)))
        if budget_hits:
            raise self._reject(_worst(budget_hits), now)
        if quota_hits:
            raise self._reject(_worst(quota_hits), now)

    async def _limits(self, tenant_id: str, user_id: str | None, unit: str) -> list[_Limit]:
        rows = await self._store.rows_for(tenant_id, user_id, (unit, "cost"))
        limits = [_Limit(r.user_id, r.period, r.unit, r.amount) for r in rows]
        has_tenant_row = any(r.user_id is None and r.unit == unit for r in rows)
        if self._default and not has_tenant_row:
            limits.append(_Limit(None, "month", unit, Decimal(self._default)))
        return limits

    def _reject(self, hit: _Violation, now: datetime) -> ScaiError:
        limit = hit.limit
        scope = "tenant" if limit.user_id is None else "user"
        adjective = "daily" if limit.period == "day" else "monthly"
        ends_at = format_ts(hit.ends_at)
        if limit.unit == "cost":
            if self._on_reject:
                self._on_reject("cost", "budget")
            return ScaiError(
                "BUDGET_EXCEEDED",
                f"the {adjective} cost budget of this {scope} is spent",
                unit="cost",
                limit=format_money(limit.amount),
                used=format_money(from_micros(hit.used)),
                period=limit.period,
                period_ends_at=ends_at,
            )
        if self._on_reject:
            self._on_reject(limit.unit, "quota")
        return ScaiError(
            "QUOTA_EXCEEDED",
            f"the {adjective} {limit.unit} quota of this {scope} is spent",
            retry_after=seconds_until_end(limit.period, now),
            unit=limit.unit,
            limit=int(limit.amount),
            used=hit.used,
            period=limit.period,
            period_ends_at=ends_at,
        )


def _worst(hits: list[_Violation]) -> _Violation:
    """The violation a retry would meet last: latest period end, then the month (the last day
    of a month ends both periods at once), then tenant-wide before per-user."""
    return max(hits, key=lambda h: (h.ends_at, h.limit.period == "month", h.limit.user_id is None))
