"""Administration: tenant policy, usage and budget, dashboard and node listing.

scaiecho.md §3.1–3.2, §9 and §10. Writes are audited (platform §10.1): the success row in the
same transaction as the change where the store allows it, and a ``FAILURE`` row for a write
that fails after authentication (the routes, through :mod:`scaicommon.adminaudit`). Reads of
usage and budgets are audited too (``scaiecho.usage.read``, ``scaiecho.budget.read``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from redis.exceptions import RedisError

from scaicommon.adminaudit import Origin, audit_success
from scaicommon.errors import service_unavailable, validation_error
from scaicommon.nodelisting import NodeListing
from scaicommon.periods import period_end
from scaicommon.policy import Policy, parse_default_backend, parse_echo_allowed
from scaicommon.principal import Principal
from scaicommon.tenantadmin import BUDGET_PERIOD, MAX_BUDGET_AMOUNT, TenantBudgetAdmin
from scaicommon.tenantadmin import PolicyAdmin as TenantPolicyAdmin
from scaicommon.timefmt import format_ts, utcnow
from scaicommon.usage import Budget
from scaicommon.workerapp import queue_name, workers_key
from scaiecho.deps import EchoDeps
from scaiecho.store.dashboard import DashboardStore, Percentiles

__all__ = [
    "BUDGET_PERIOD",
    "BUDGET_UNIT",
    "MAX_AUDIO_SECONDS_LIMIT",
    "SOURCES",
    "BudgetAdmin",
    "BudgetView",
    "Dashboard",
    "DashboardService",
    "NodeCounts",
    "Origin",
    "PercentilesView",
    "PolicyAdmin",
    "PolicyView",
    "UsageReport",
    "UsageReporter",
    "node_counts",
    "parse_month",
]

BUDGET_UNIT: Final = "audio_ms"
#: The largest limit a ``budgets`` row (numeric(20,6), in ms) can hold, in seconds.
MAX_AUDIO_SECONDS_LIMIT: Final = MAX_BUDGET_AMOUNT // 1000
#: ``by_source`` bucket of each usage ``operation`` ScaiEcho records.
SOURCES: Final = {
    "transcribe.batch": "batch",
    "transcribe.job": "batch",
    "transcribe.openai": "openai",
    "transcribe.stream": "stream",
    "transcribe.webrtc": "webrtc",
}
_SOURCE_ORDER: Final = ("batch", "stream", "webrtc", "openai")
_MONTH_RE: Final = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


# ----- response shapes (also the OpenAPI schemas) ---------------------------------------


class PolicyView(msgspec.Struct):
    """The tenant policy object (§3.1)."""

    tenant_id: str
    allowed_backends: str
    default_backend: str
    updated_at: str

    @classmethod
    def of(cls, policy: Policy) -> PolicyView:
        """The API form of a stored policy."""
        return cls(**policy.to_echo_api())


class UsageReport(msgspec.Struct):
    """``GET /usage`` (§9): one calendar month (UTC) of a tenant's audio milliseconds."""

    tenant_id: str
    period: str
    period_start: str
    period_end: str
    audio_ms: int
    requests: int
    audio_seconds_limit: int | None
    remaining_seconds: int | None
    by_backend: dict[str, int]
    by_source: dict[str, int]


class BudgetView(msgspec.Struct):
    """``GET``/``PUT /admin/budget`` (§9)."""

    tenant_id: str
    period: str
    audio_seconds_limit: int | None
    updated_at: str | None


class PercentilesView(msgspec.Struct):
    """p50/p95 in milliseconds; ``null`` without data."""

    p50: int | None
    p95: int | None

    @classmethod
    def of(cls, value: Percentiles) -> PercentilesView:
        """From the store's figures."""
        return cls(value.p50, value.p95)


class NodeCounts(msgspec.Struct):
    """Node counts by health; ``by_engine`` counts non-stale nodes only."""

    total: int
    healthy: int
    warning: int
    stale: int
    by_engine: dict[str, int]


class Dashboard(msgspec.Struct):
    """``GET /admin/dashboard`` (§10)."""

    generated_at: str
    queue_depth: int
    tenant_queued: int
    worker_count: int
    jobs_by_status_24h: dict[str, int]
    job_latency_ms: PercentilesView
    queue_wait_ms: PercentilesView
    nodes: NodeCounts


# ----- tenant policy -------------------------------------------------------------------


class PolicyAdmin:
    """``GET``/``PATCH /tenant-policy`` (§3.2)."""

    def __init__(self, deps: EchoDeps) -> None:
        self._admin = TenantPolicyAdmin(deps.policies, deps.audit, module="scaiecho")

    async def get(self, tenant_id: str) -> PolicyView:
        """The tenant's policy, provisioned from the defaults when it has none (§3.1)."""
        return PolicyView.of(await self._admin.get(tenant_id))

    async def update(
        self,
        principal: Principal,
        *,
        allowed_backends: str | None,
        default_backend: str | None,
        origin: Origin | None = None,
    ) -> PolicyView:
        """Merge the given fields into the stored policy and audit the change atomically.

        Raises ``VALIDATION_ERROR`` for no field, a value outside the enums, or a default
        that is not allowed (``details`` on ``default_backend``).
        """
        principal.require_tenant()
        allowed = parse_echo_allowed(allowed_backends) if allowed_backends is not None else None
        default = parse_default_backend(default_backend) if default_backend is not None else None
        after = await self._admin.update(principal, allowed=allowed, default=default, origin=origin)
        return PolicyView.of(after)


# ----- usage and budget ----------------------------------------------------------------


def parse_month(raw: str | None, *, now: datetime | None = None) -> datetime:
    """The first instant of the ``YYYY-MM`` month (UTC); the current month when absent.

    Raises ``VALIDATION_ERROR`` on field ``period``.
    """
    if raw is None:
        at = (now or utcnow()).astimezone(UTC)
        return datetime(at.year, at.month, 1, tzinfo=UTC)
    match = _MONTH_RE.match(raw.strip())
    if not match or int(match.group(1)) < 1:
        raise validation_error("period", f"expected YYYY-MM, got {raw[:20]!r}")
    return datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC)


def _limit_seconds(budget: Budget | None) -> int | None:
    return None if budget is None else int(budget.amount) // 1000


class BudgetAdmin:
    """The tenant's monthly audio budget: one tenant-wide ``month``/``audio_ms`` row (§9)."""

    def __init__(self, deps: EchoDeps) -> None:
        self._admin = TenantBudgetAdmin(
            deps.budgets,
            deps.audit,
            module="scaiecho",
            unit=BUDGET_UNIT,
            limit_field="audio_seconds_limit",
            limit_of=_limit_seconds,
        )

    async def current(self, tenant_id: str) -> Budget | None:
        """The tenant's budget row, or ``None`` (unlimited)."""
        return await self._admin.current(tenant_id)

    @staticmethod
    def view(tenant_id: str, budget: Budget | None) -> BudgetView:
        """The API object for a row (or its absence)."""
        return BudgetView(
            tenant_id=tenant_id,
            period=BUDGET_PERIOD,
            audio_seconds_limit=_limit_seconds(budget),
            updated_at=format_ts(budget.updated_at) if budget is not None else None,
        )

    async def read(self, principal: Principal, *, origin: Origin | None = None) -> BudgetView:
        """``GET /admin/budget``; audited as ``scaiecho.budget.read``."""
        budget = await self._admin.read(principal, origin=origin)
        return self.view(principal.require_tenant(), budget)

    async def set(
        self, principal: Principal, audio_seconds_limit: int | None, *, origin: Origin | None = None
    ) -> BudgetView:
        """Store the monthly limit (``None`` deletes the row: unlimited) and audit it."""
        tenant_id = principal.require_tenant()
        if audio_seconds_limit is not None and not (
            0 <= audio_seconds_limit <= MAX_AUDIO_SECONDS_LIMIT
        ):
            raise validation_error(
                "audio_seconds_limit", f"must be an integer from 0 to {MAX_AUDIO_SECONDS_LIMIT}"
            )
        amount = None if audio_seconds_limit is None else audio_seconds_limit * 1000
        after = await self._admin.replace(principal, amount, origin=origin)
        return self.view(tenant_id, after)


class UsageReporter:
    """``GET /usage`` (§9)."""

    def __init__(self, deps: EchoDeps) -> None:
        self._deps = deps

    async def report(
        self, principal: Principal, month_start: datetime, *, origin: Origin | None = None
    ) -> UsageReport:
        """The month's usage of the caller's tenant; audited as ``scaiecho.usage.read``."""
        tenant_id = principal.require_tenant()
        end = period_end("month", month_start)
        usage = self._deps.usage
        by_backend = await usage.totals(tenant_id, month_start, end, group_by="backend")
        by_operation = await usage.totals(tenant_id, month_start, end, group_by="operation")
        budget = await BudgetAdmin(self._deps).current(tenant_id)
        sources = dict.fromkeys(_SOURCE_ORDER, 0)
        for operation, totals in by_operation.groups.items():
            source = SOURCES.get(operation)
            if source is not None:
                sources[source] += totals.units
        limit_s = _limit_seconds(budget)
        remaining: int | None = None
        if budget is not None:
            remaining = max(0, int(budget.amount) - by_backend.units) // 1000
        await audit_success(
            self._deps.audit,
            principal,
            action="scaiecho.usage.read",
            resource_type="usage",
            origin=origin,
            details={"period": month_start.strftime("%Y-%m")},
        )
        return UsageReport(
            tenant_id=tenant_id,
            period="month",
            period_start=_ts(month_start),
            period_end=_ts(end),
            audio_ms=by_backend.units,
            requests=by_backend.requests,
            audio_seconds_limit=limit_s,
            remaining_seconds=remaining,
            by_backend={b: _units(by_backend.groups, b) for b in ("A", "B")},
            by_source=sources,
        )


def _units(groups: Mapping[str, Any], key: str) -> int:
    found = groups.get(key)
    return int(found.units) if found is not None else 0


def _ts(value: datetime) -> str:
    text = format_ts(value)
    assert text is not None
    return text


# ----- dashboard and nodes -------------------------------------------------------------


def node_counts(items: Sequence[Mapping[str, Any]]) -> NodeCounts:
    """Counts by health over listing items (never-answered endpoints are stale)."""
    by_health = {"healthy": 0, "warning": 0, "stale": 0}
    by_engine: dict[str, int] = {}
    for item in items:
        health = str(item["health"])
        by_health[health] = by_health.get(health, 0) + 1
        if health == "stale":
            continue
        for kind in sorted({str(e["kind"]) for e in item["engines"]}):
            by_engine[kind] = by_engine.get(kind, 0) + 1
    return NodeCounts(
        total=len(items),
        healthy=by_health["healthy"],
        warning=by_health["warning"],
        stale=by_health["stale"],
        by_engine=by_engine,
    )


class DashboardService:
    """``GET /admin/dashboard`` (§10): global queue, workers and nodes; the tenant's jobs."""

    def __init__(self, deps: EchoDeps) -> None:
        self._runtime = deps.runtime
        self._store = DashboardStore(deps.runtime.pool)

    async def build(self, tenant_id: str) -> Dashboard:
        """Every figure of the dashboard, read now."""
        generated_at = utcnow()
        module = self._runtime.spec.module
        redis = self._runtime.redis
        try:
            queue_depth = int(await redis.zcard(queue_name(module)))
            workers = 0
            async for _ in redis.scan_iter(match=workers_key(module, "*"), count=500):
                workers += 1
        except (RedisError, OSError) as exc:
            raise service_unavailable("Redis cannot be read") from exc
        stats = await self._store.tenant_stats(tenant_id)
        nodes = node_counts(await NodeListing(self._runtime).items())
        return Dashboard(
            generated_at=_ts(generated_at),
            queue_depth=queue_depth,
            tenant_queued=stats.queued,
            worker_count=workers,
            jobs_by_status_24h=stats.by_status,
            job_latency_ms=PercentilesView.of(stats.job_latency),
            queue_wait_ms=PercentilesView.of(stats.queue_wait),
            nodes=nodes,
        )
