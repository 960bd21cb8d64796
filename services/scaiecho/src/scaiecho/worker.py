"""ScaiEcho's arq worker: ``process_transcribe_job`` and the housekeeping crons (§5.2)."""

from __future__ import annotations

from typing import Any

from arq.cron import cron
from arq.worker import func

from scaicommon.jobs import JobQueue
from scaicommon.runtime import Runtime
from scaicommon.workerapp import WorkerDefinition
from scaiecho.deps import deps_of
from scaiecho.dispatch import Dispatcher
from scaiecho.services.jobs import JobRunner
from scaiecho.services.sweeps import JobSweeper
from scaiecho.services.transcribe import PROCESS_JOB
from scaiecho.settings import EchoSettings

#: arq's own try limit stays out of the way: the job row counts attempts (§5.2).
_ARQ_MAX_TRIES = 1000


def _queue(runtime: Runtime) -> JobQueue:
    return JobQueue(runtime.redis, runtime.spec.module)


async def process_transcribe_job(ctx: dict[str, Any], job_id: str) -> str:
    """One attempt of an async transcription job."""
    runtime: Runtime = ctx["runtime"]
    deps = deps_of(runtime)
    runner = JobRunner(deps, Dispatcher(runtime, deps.settings, deps.policies), _queue(runtime))
    return await runner.run(job_id, ctx["worker_id"])


async def sweep_transcribe_jobs(ctx: dict[str, Any]) -> list[str]:
    """Re-enqueue lost jobs and take over those of dead workers."""
    runtime: Runtime = ctx["runtime"]
    return await JobSweeper(deps_of(runtime), _queue(runtime)).requeue_lost()


async def purge_transcribe_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    """Retention and staged-object cleanup."""
    runtime: Runtime = ctx["runtime"]
    return await JobSweeper(deps_of(runtime), _queue(runtime)).purge()


def build_worker(runtime: Runtime) -> WorkerDefinition:
    """The worker's job functions and cron jobs."""
    settings = runtime.settings
    assert isinstance(settings, EchoSettings)
    every = settings.job_sweep_interval_s
    return WorkerDefinition(
        functions=[func(process_transcribe_job, name=PROCESS_JOB, max_tries=_ARQ_MAX_TRIES)],
        cron_jobs=[
            cron(
                sweep_transcribe_jobs,
                name="sweep_transcribe_jobs",
                second=set(range(0, 60, every)) if every < 60 else {0},
                minute=None if every < 60 else set(range(0, 60, every // 60)),
                run_at_startup=True,
            ),
            cron(purge_transcribe_jobs, name="purge_transcribe_jobs", minute={17}, second={0}),
        ],
        max_jobs=settings.worker_concurrency,
    )
