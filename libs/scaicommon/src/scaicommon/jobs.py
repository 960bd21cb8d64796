"""The worker side of async jobs (design §5): the arq queue, leases, retries and the sweep.

The Postgres row is the truth and Redis only the queue. A service enqueues with
``_job_id = job_id`` so a job is queued at most once; a sweep re-enqueues rows the queue lost
(a Redis restart) and frees the arq claim of a job whose worker died, so another worker takes it.
An attempt keeps its row's lease alive while it runs and gives it back before a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection
from datetime import timedelta
from typing import Any, Final

import redis.asyncio as aioredis
from arq import Retry
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from structlog.typing import FilteringBoundLogger

from scaicommon.jobrows import JobRow, JobRows
from scaicommon.metrics import ServiceMetrics
from scaicommon.timefmt import utcnow
from scaicommon.workerapp import queue_name

#: Backoff before the 2nd and 3rd attempt of a transient failure (scaiecho.md §5.2).
RETRY_BACKOFF_S: Final = (5, 20)


def backoff_s(attempt: int) -> int:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    index = min(max(attempt, 1), len(RETRY_BACKOFF_S)) - 1
    return RETRY_BACKOFF_S[index]


class JobQueue:
    """One module's arq queue on the service's Redis connection pool."""

    def __init__(self, redis: aioredis.Redis, module: str) -> None:
        self.name = queue_name(module)
        self._redis = redis
        self._arq = ArqRedis(connection_pool=redis.connection_pool, default_queue_name=self.name)

    async def enqueue(self, function: str, job_id: str, *args: Any) -> bool:
        """Queue ``function(ctx, job_id, *args)`` under ``job_id``; ``False`` when already there."""
        job = await self._arq.enqueue_job(function, job_id, *args, _job_id=job_id)
        return job is not None

    async def known(self, job_id: str) -> bool:
        """The queue still holds the job (waiting, running or just finished)."""
        keys = (job_key_prefix + job_id, in_progress_key_prefix + job_id)
        if await self._redis.exists(*keys):
            return True
        return await self._redis.zscore(self.name, job_id) is not None

    async def forget(self, job_id: str) -> None:
        """Drop every arq trace of a job, so it can be enqueued again under its id."""
        await self._redis.zrem(self.name, job_id)
        await self._redis.delete(
            job_key_prefix + job_id, in_progress_key_prefix + job_id, result_key_prefix + job_id
        )

    async def release_claim(self, job_id: str) -> bool:
        """Free the claim a dead worker holds, so a live worker starts the job again.

        Returns ``True`` when the job is still queued in arq (then it runs again on its own);
        ``False`` when arq lost it and the caller must enqueue it again.
        """
        await self._redis.delete(in_progress_key_prefix + job_id)
        in_queue = await self._redis.zscore(self.name, job_id) is not None
        return in_queue and bool(await self._redis.exists(job_key_prefix + job_id))

    async def depth(self) -> int:
        """Jobs waiting or running in the queue."""
        return int(await self._redis.zcard(self.name))


@contextlib.asynccontextmanager
async def lease_renewal(
    rows: JobRows[Any], job_id: str, worker_id: str, lease_s: float
) -> AsyncIterator[asyncio.Event]:
    """Renew the job's lease every third of ``lease_s`` while the block runs.

    The event yielded fires when a renewal fails: the job is gone or no longer this worker's.
    """
    gone = asyncio.Event()

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            if not await rows.renew_lease(job_id, worker_id, lease_s):
                gone.set()
                return

    task = asyncio.create_task(renew())
    try:
        yield gone
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def retry_if_transient(
    rows: JobRows[Any],
    job: JobRow,
    code: str,
    *,
    transient: Collection[str],
    max_attempts: int,
    log: FilteringBoundLogger,
    event: str,
) -> None:
    """Raise arq ``Retry`` with the backoff of ``job``'s attempt when error ``code`` is
    transient and attempts are left, giving the lease back first; return otherwise."""
    if code not in transient or job.attempts >= max_attempts:
        return
    defer = backoff_s(job.attempts)
    if job.worker_id:
        await rows.release(job.id, job.worker_id)
    log.info(event, code=code, attempt=job.attempts, defer_s=defer)
    raise Retry(defer=defer)


def observe_job(metrics: ServiceMetrics, kind: str, outcome: str, started: float) -> None:
    """Count a finished attempt and its duration since ``started`` (``time.monotonic()``)."""
    metrics.jobs.labels(kind=kind, outcome=outcome).inc()
    metrics.job_duration.labels(kind=kind).observe(time.monotonic() - started)


class JobSweeper:
    """Re-enqueues jobs the queue lost and hands those of dead workers to a live worker.

    ``function`` is the worker's job function, enqueued as ``function(ctx, job_id, *args)``;
    log events are ``<kind>_requeued`` and ``<kind>_reclaimed``.
    """

    def __init__(
        self,
        queue: JobQueue,
        rows: JobRows[Any],
        function: str,
        *,
        args: tuple[Any, ...] = (),
        requeue_after_s: float,
        metrics: ServiceMetrics,
        log: FilteringBoundLogger,
        kind: str,
    ) -> None:
        self._queue = queue
        self._rows = rows
        self._function = function
        self._args = args
        self._requeue_after = timedelta(seconds=requeue_after_s)
        self._metrics = metrics
        self._log = log
        self._kind = kind

    async def requeue_lost(self) -> list[str]:
        """Re-enqueue ``queued`` rows older than the threshold that Redis no longer holds,
        and hand ``running`` jobs whose lease lapsed (dead worker) to a live worker."""
        queue, done = self._queue, []
        for job in await self._rows.queued_before(utcnow() - self._requeue_after):
            if not await queue.known(job.id):
                await queue.enqueue(self._function, job.id, *self._args)
                self._log.info(f"{self._kind}_requeued", job_id=job.id, status=job.status)
                done.append(job.id)
        for job in await self._rows.orphaned():
            if not await queue.release_claim(job.id):
                await queue.forget(job.id)
                await queue.enqueue(self._function, job.id, *self._args)
            self._log.info(f"{self._kind}_reclaimed", job_id=job.id, worker_id=job.worker_id)
            done.append(job.id)
        self._metrics.queue_depth.labels(queue=queue.name).set(await queue.depth())
        return done
