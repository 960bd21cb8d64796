"""The stores and guards both services build the same way from a started runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaicommon.audit import AuditWriter
from scaicommon.policy import PolicyStore
from scaicommon.pricing import Pricing
from scaicommon.runtime import Runtime
from scaicommon.usage import BudgetGuard, BudgetStore, UsageRecord, UsageRecorder


@dataclass(frozen=True)
class ServiceDeps:
    """Tenant policy, usage metering, budgets with their guard, and the audit writer."""

    runtime: Runtime
    policies: PolicyStore
    usage: UsageRecorder
    budgets: BudgetStore
    guard: BudgetGuard
    audit: AuditWriter


def common_deps(
    runtime: Runtime, pricing: Pricing, *, default_monthly_limit: int | None = None
) -> dict[str, Any]:
    """The :class:`ServiceDeps` fields for ``runtime``, as keyword arguments for a subclass."""
    settings = runtime.settings
    pool = runtime.pool
    metrics = runtime.metrics

    def count_usage(record: UsageRecord) -> None:
        metrics.usage_units.labels(unit=record.unit, backend=record.backend).inc(record.units)

    def count_rejection(unit: str, kind: str) -> None:
        metrics.quota_rejections.labels(unit=unit, kind=kind).inc()

    usage = UsageRecorder(
        pool, runtime.redis, runtime.spec.module, pricing=pricing, on_record=count_usage
    )
    budgets = BudgetStore(pool)
    return {
        "runtime": runtime,
        "policies": PolicyStore(
            pool,
            default_allowed=settings.default_allowed_backends,
            default_backend=settings.default_backend,
            relay_configured=settings.relay_configured,
        ),
        "usage": usage,
        "budgets": budgets,
        "guard": BudgetGuard(
            budgets, usage, pricing, default_monthly_limit, on_reject=count_rejection
        ),
        "audit": AuditWriter(pool, module=runtime.spec.module),
    }
