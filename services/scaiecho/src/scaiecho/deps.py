"""ScaiEcho's per-process collaborators, built once from the runtime after it started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from scaicommon.pricing import Pricing
from scaicommon.runtime import Runtime
from scaicommon.servicedeps import ServiceDeps, common_deps
from scaiecho.settings import EchoSettings
from scaiecho.store.jobs import JobStore


@dataclass(frozen=True)
class EchoDeps(ServiceDeps):
    """The common stores plus ScaiEcho's settings and job rows."""

    settings: EchoSettings
    jobs: JobStore


def deps_of(runtime: Runtime) -> EchoDeps:
    """The process's :class:`EchoDeps`, built on first use (the runtime must be started)."""

    def build() -> EchoDeps:
        settings = cast(EchoSettings, runtime.settings)
        pricing = Pricing.per_audio_minute(
            settings.price_per_audio_minute_a, settings.price_per_audio_minute_b
        )
        return EchoDeps(
            **common_deps(runtime, pricing), settings=settings, jobs=JobStore(runtime.pool)
        )

    return runtime.cached("scaiecho.deps", build)
