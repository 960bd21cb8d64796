"""The API process's service objects, built once after the runtime started."""

from __future__ import annotations

from dataclasses import dataclass

from scaicommon.jobs import JobQueue
from scaicommon.runtime import Runtime
from scaiecho.deps import EchoDeps, deps_of
from scaiecho.dispatch import Dispatcher
from scaiecho.services.jobs import JobService
from scaiecho.services.transcribe import TranscribeService


@dataclass(frozen=True)
class EchoServices:
    """Every behaviour the HTTP routes call."""

    deps: EchoDeps
    dispatcher: Dispatcher
    transcribe: TranscribeService
    jobs: JobService


def services_of(runtime: Runtime) -> EchoServices:
    """The process's :class:`EchoServices` (built on first use)."""

    def build() -> EchoServices:
        deps = deps_of(runtime)
        dispatcher = Dispatcher(runtime, deps.settings, deps.policies)
        queue = JobQueue(runtime.redis, runtime.spec.module)
        return EchoServices(
            deps=deps,
            dispatcher=dispatcher,
            transcribe=TranscribeService(deps, dispatcher, queue),
            jobs=JobService(deps),
        )

    return runtime.cached("scaiecho.services", build)
