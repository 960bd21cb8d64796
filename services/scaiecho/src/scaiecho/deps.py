"""ScaiEcho's per-process collaborators, built once from the runtime after it started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from scaicommon.audit import AuditWriter
from scaicommon.policy import PolicyStore
from scaicommon.pricing import Pricing
from scaicommon.runtime import Runtime
from scaicommon.usage import BudgetGuard, BudgetStore, UsageRecorder
from scaiecho.settings import EchoSettings
from scaiecho.store.jobs import JobStore

_ATTR = "_scaiecho_deps"


@dataclass(frozen=True)
class EchoDeps:
    """Stores and guards every ScaiEcho service uses (one set per process)."""

    runtime: Runtime
    settings: EchoSettings
    policies: PolicyStore
    usage: UsageRecorder
    budgets: BudgetStore
    guard: BudgetGuard
    audit: AuditWriter
    jobs: JobStore


def deps_of(runtime: Runtime) -> EchoDeps:
    """The process's :class:`EchoDeps`, built on first use (the runtime must be started)."""
    existing = getattr(runtime, _ATTR, None)
    if isinstance(existing, EchoDeps):
        return existing
    settings = cast(EchoSettings, runtime.settings)
    pool = runtime.pool
    pricing = Pricing.per_audio_minute(
        settings.price_per_audio_minute_a, settings.price_per_audio_minute_b
    )
    usage = UsageRecorder(pool, runtime.redis, runtime.spec.module, pricing=pricing)
    budgets = BudgetStore(pool)
    deps = EchoDeps(
        runtime=runtime,
        settings=settings,
        policies=PolicyStore(
            pool,
            default_allowed=settings.default_allowed_backends,
            default_backend=settings.default_backend,
            relay_configured=settings.relay_configured,
        ),
        usage=usage,
        budgets=budgets,
        guard=BudgetGuard(budgets, usage, pricing),
        audit=AuditWriter(pool, module=runtime.spec.module),
        jobs=JobStore(pool),
    )
    setattr(runtime, _ATTR, deps)
    return deps
