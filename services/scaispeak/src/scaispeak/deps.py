"""ScaiSpeak's per-process collaborators, built once from the runtime after it started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from scaicommon.audit import AuditWriter, ErasureAuditWriter
from scaicommon.jobs import JobQueue
from scaicommon.policy import PolicyStore
from scaicommon.pricing import Pricing
from scaicommon.runtime import Runtime
from scaicommon.usage import BudgetGuard, BudgetStore, UsageRecorder
from scaispeak.settings import SpeakSettings
from scaispeak.store.voices import VoiceStore

_ATTR = "_scaispeak_deps"


@dataclass(frozen=True)
class SpeakDeps:
    """Stores and guards every ScaiSpeak service uses (one set per process)."""

    runtime: Runtime
    settings: SpeakSettings
    policies: PolicyStore
    usage: UsageRecorder
    budgets: BudgetStore
    guard: BudgetGuard
    audit: AuditWriter
    erasures: ErasureAuditWriter
    voices: VoiceStore
    queue: JobQueue


def deps_of(runtime: Runtime) -> SpeakDeps:
    """The process's :class:`SpeakDeps`, built on first use (the runtime must be started)."""
    existing = getattr(runtime, _ATTR, None)
    if isinstance(existing, SpeakDeps):
        return existing
    settings = cast(SpeakSettings, runtime.settings)
    pool = runtime.pool
    pricing = Pricing.per_1k_chars(settings.price_per_1k_chars_a, settings.price_per_1k_chars_b)
    usage = UsageRecorder(pool, runtime.redis, runtime.spec.module, pricing=pricing)
    budgets = BudgetStore(pool)
    deps = SpeakDeps(
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
        guard=BudgetGuard(budgets, usage, pricing, settings.default_monthly_chars_limit),
        audit=AuditWriter(pool, module=runtime.spec.module),
        erasures=ErasureAuditWriter(pool),
        voices=VoiceStore(pool),
        queue=JobQueue(runtime.redis, runtime.spec.module),
    )
    setattr(runtime, _ATTR, deps)
    return deps
