"""The arq side of async jobs (design §5): enqueue by job id, find lost jobs, free dead claims.

The Postgres row is the truth and Redis only the queue. A service enqueues with
``_job_id = job_id`` so a job is queued at most once; a sweep re-enqueues rows the queue lost
(a Redis restart) and frees the arq claim of a job whose worker died, so another worker takes it.
"""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix

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
