"""ScaiSpeak's arq worker: functions and cron jobs."""

from __future__ import annotations

from scaicommon.runtime import Runtime
from scaicommon.workerapp import WorkerDefinition


def build_worker(runtime: Runtime) -> WorkerDefinition:
    """The worker's job functions and cron jobs."""
    del runtime  # synthesis jobs and the erasure reconciler land with the batch issue
    return WorkerDefinition()
