"""ScaiEcho's arq worker: functions and cron jobs."""

from __future__ import annotations

from scaicommon.runtime import Runtime
from scaicommon.workerapp import WorkerDefinition


def build_worker(runtime: Runtime) -> WorkerDefinition:
    """The worker's job functions and cron jobs."""
    concurrency = getattr(runtime.settings, "worker_concurrency", 4)
    return WorkerDefinition(max_jobs=int(concurrency))
