"""ScaiSpeak's per-process collaborators, built once from the runtime after it started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from scaicommon.audit import ErasureAuditWriter
from scaicommon.jobs import JobQueue
from scaicommon.pricing import Pricing
from scaicommon.runtime import Runtime
from scaicommon.servicedeps import ServiceDeps, common_deps
from scaispeak.settings import SpeakSettings
from scaispeak.store.voices import VoiceStore


@dataclass(frozen=True)
class SpeakDeps(ServiceDeps):
    """The common stores plus ScaiSpeak's settings, erasure audit, voices and job queue."""

    settings: SpeakSettings
    erasures: ErasureAuditWriter
    voices: VoiceStore
    queue: JobQueue


def deps_of(runtime: Runtime) -> SpeakDeps:
    """The process's :class:`SpeakDeps`, built on first use (the runtime must be started)."""

    def build() -> SpeakDeps:
        settings = cast(SpeakSettings, runtime.settings)
        pricing = Pricing.per_1k_chars(settings.price_per_1k_chars_a, settings.price_per_1k_chars_b)
        return SpeakDeps(
            **common_deps(
                runtime, pricing, default_monthly_limit=settings.default_monthly_chars_limit
            ),
            settings=settings,
            erasures=ErasureAuditWriter(runtime.pool),
            voices=VoiceStore(runtime.pool),
            queue=JobQueue(runtime.redis, runtime.spec.module),
        )

    return runtime.cached("scaispeak.deps", build)
