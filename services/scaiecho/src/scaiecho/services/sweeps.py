"""The worker's housekeeping crons (scaiecho.md §5.2)."""

from __future__ import annotations

from datetime import timedelta

import structlog

from scaicommon import jobs
from scaicommon.storage import StorageError
from scaicommon.timefmt import utcnow
from scaiecho.deps import EchoDeps
from scaiecho.services.jobs import drop_staged
from scaiecho.services.transcribe import PROCESS_JOB

log = structlog.get_logger("scaiecho.sweeps")

#: Staged objects younger than this are never swept (their row may not be written yet).
STAGED_GRACE = timedelta(hours=1)
#: An inline call running this long was cut short by a crash of its API process.
INLINE_ABANDONED = timedelta(hours=6)


class JobSweeper(jobs.JobSweeper):
    """Finds jobs the queue lost or a dead worker left behind, and old rows and objects."""

    def __init__(self, deps: EchoDeps, queue: jobs.JobQueue) -> None:
        super().__init__(
            queue,
            deps.jobs,
            PROCESS_JOB,
            requeue_after_s=deps.settings.job_requeue_after_s,
            metrics=deps.runtime.metrics,
            log=log,
            kind="transcribe_job",
        )
        self._deps = deps

    async def purge(self) -> dict[str, int]:
        """Hourly: drop finished jobs past retention, staged objects no live job references,
        and fail inline rows whose API process died."""
        settings = self._deps.settings
        purged = await self._deps.jobs.purge_finished(timedelta(days=settings.job_retention_days))
        for job in purged:
            await drop_staged(self._deps, job)
        abandoned = await self._deps.jobs.stale_inline(utcnow() - INLINE_ABANDONED)
        objects = self._deps.runtime.objects
        removed = 0
        try:
            live = await self._deps.jobs.live_audio_keys()
            cutoff = utcnow() - STAGED_GRACE
            for key, modified in await objects.list_keys(objects.key("transcribe_jobs/")):
                if key not in live and modified < cutoff:
                    await objects.delete(key)
                    removed += 1
        except StorageError as exc:
            log.warning("staged_sweep_failed", error=str(exc))
        stats = {"jobs": len(purged), "objects": removed, "abandoned_inline": abandoned}
        log.info("transcribe_jobs_purged", **stats)
        return stats
