"""ScaiSpeak's arq worker: ``process_synth_job``, the job sweeps and the erasure reconciler
(scaispeak.md §5.6, §12.4)."""

from __future__ import annotations

from typing import Any

from arq.cron import CronJob, cron
from arq.worker import func

from scaicommon.runtime import Runtime
from scaicommon.workerapp import WorkerDefinition
from scaispeak.deps import deps_of
from scaispeak.services.erasure import reconcile_erasures
from scaispeak.services.speak import PROCESS_SYNTH_JOB
from scaispeak.services.synth_jobs import SynthJobRunner, SynthJobSweeper
from scaispeak.settings import SpeakSettings

#: arq's own try limit stays out of the way: the job row counts attempts (§5.6).
_ARQ_MAX_TRIES = 1000


async def process_synth_job(
    ctx: dict[str, Any], job_id: str, save_to: dict[str, Any] | None = None
) -> str:
    """One attempt of an async synthesis job (``save_to``: the sealed ScaiDrive payload)."""
    runtime: Runtime = ctx["runtime"]
    return await SynthJobRunner(deps_of(runtime)).run(job_id, ctx["worker_id"], save_to)


async def sweep_synth_jobs(ctx: dict[str, Any]) -> list[str]:
    """Re-enqueue lost jobs and take over those of dead workers."""
    runtime: Runtime = ctx["runtime"]
    deps = deps_of(runtime)
    return await SynthJobSweeper(deps, deps.queue).requeue_lost()


async def purge_synth_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    """Output retention and unreferenced-object cleanup."""
    runtime: Runtime = ctx["runtime"]
    deps = deps_of(runtime)
    return await SynthJobSweeper(deps, deps.queue).purge()


def every(coroutine: Any, name: str, seconds: float, *, run_at_startup: bool = False) -> CronJob:
    """An arq cron running ``coroutine`` every ``seconds`` (whole seconds dividing a minute,
    or whole minutes dividing an hour; other values round to the nearest that does)."""
    step = max(1, round(seconds))
    if step < 60:
        step = next(s for s in range(step, 61) if 60 % s == 0)
        return cron(
            coroutine,
            name=name,
            second=set(range(0, 60, step)),
            run_at_startup=run_at_startup,
        )
    minutes = max(1, round(step / 60))
    minutes = next(m for m in range(minutes, 61) if 60 % m == 0)
    return cron(
        coroutine,
        name=name,
        minute=set(range(0, 60, minutes)),
        second={0},
        run_at_startup=run_at_startup,
    )


def build_worker(runtime: Runtime) -> WorkerDefinition:
    """The worker's job function and cron jobs."""
    settings = runtime.settings
    assert isinstance(settings, SpeakSettings)
    return WorkerDefinition(
        functions=[func(process_synth_job, name=PROCESS_SYNTH_JOB, max_tries=_ARQ_MAX_TRIES)],
        cron_jobs=[
            every(
                sweep_synth_jobs,
                "sweep_synth_jobs",
                settings.job_sweep_interval_s,
                run_at_startup=True,
            ),
            cron(purge_synth_jobs, name="purge_synth_jobs", minute={23}, second={0}),
            every(
                reconcile_erasures,
                "reconcile_erasures",
                settings.erasure_reconcile_interval_s,
            ),
        ],
    )
