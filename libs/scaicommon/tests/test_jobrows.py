"""The shared job-row SQL and worker mechanics against a real Postgres and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from arq import Retry
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from scaicommon.jobrows import JobRows
from scaicommon.jobs import JobQueue, JobSweeper, lease_renewal, retry_if_transient
from scaicommon.metrics import ServiceMetrics
from scaicommon.timefmt import utcnow

log = structlog.get_logger("scaicommon.tests.jobrows")


@dataclass(frozen=True)
class DemoJob:
    """A row of the test table: the common column set plus one service column (``error``)."""

    id: str
    tenant_id: str
    user_id: str
    mode: str
    status: str
    status_reason: str | None
    error: dict[str, Any] | None
    backend_used: str | None
    node_id: str | None
    attempts: int
    worker_id: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DemoJob:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


class DemoRows(JobRows[DemoJob]):
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(pool, "demo_jobs", DemoJob.from_row)

    async def add(
        self,
        job_id: str,
        *,
        mode: str = "async",
        status: str = "queued",
        user_id: str = "usr_a",
        age: timedelta = timedelta(0),
        worker_id: str | None = None,
        lease: timedelta | None = None,
    ) -> None:
        await self._count(
            "INSERT INTO demo_jobs (id, tenant_id, user_id, mode, status, worker_id,"
            " lease_expires_at, created_at, started_at) VALUES (%s, 'tnt_a', %s, %s, %s, %s,"
            " now() + %s::interval, now() - %s::interval,"
            " CASE WHEN %s = 'running' THEN now() - %s::interval END)",
            (job_id, user_id, mode, status, worker_id, lease, age, status, age),
        )

    async def delete(self, job_id: str) -> None:
        await self._count("DELETE FROM demo_jobs WHERE id = %s", (job_id,))

    async def stale_with_error(self, cutoff: datetime) -> int:
        return await self._fail_stale_inline(cutoff, error=Jsonb({"code": "INTERNAL_ERROR"}))


@pytest.fixture
async def rows(pool: AsyncConnectionPool[Any]) -> AsyncIterator[DemoRows]:
    async with pool.connection() as conn:
        await conn.execute(
            "CREATE TABLE demo_jobs (id text PRIMARY KEY, tenant_id text NOT NULL,"
            " user_id text NOT NULL, mode text NOT NULL, status text NOT NULL,"
            " status_reason text, error jsonb, backend_used text, node_id text,"
            " attempts int NOT NULL DEFAULT 0, worker_id text, lease_expires_at timestamptz,"
            " created_at timestamptz NOT NULL DEFAULT now(), started_at timestamptz,"
            " completed_at timestamptz)"
        )
    yield DemoRows(pool)


async def test_claim_takes_a_queued_job_once_per_live_lease(rows: DemoRows) -> None:
    await rows.add("job_1")
    first = await rows.claim("job_1", "wrk_a", 30)
    assert first is not None
    assert (first.status, first.attempts, first.worker_id) == ("running", 1, "wrk_a")
    assert first.lease_expires_at is not None and first.started_at is not None
    assert await rows.claim("job_1", "wrk_b", 30) is None  # leased by a live worker
    again = await rows.claim("job_1", "wrk_a", 30)  # the same worker's retry
    assert again is not None and again.attempts == 2
    assert again.started_at == first.started_at


async def test_a_lapsed_or_released_lease_is_claimable(rows: DemoRows) -> None:
    await rows.add("job_1", status="running", worker_id="wrk_dead", lease=timedelta(seconds=-1))
    taken = await rows.claim("job_1", "wrk_b", 30)
    assert taken is not None and taken.worker_id == "wrk_b"
    await rows.release("job_1", "wrk_other")  # not its lease: nothing changes
    assert await rows.claim("job_1", "wrk_c", 30) is None
    await rows.release("job_1", "wrk_b")
    released = await rows.get("job_1")
    assert released is not None and released.lease_expires_at is None
    assert released.status == "running"
    assert await rows.claim("job_1", "wrk_c", 30) is not None


async def test_inline_and_terminal_rows_are_never_claimed(rows: DemoRows) -> None:
    await rows.add("job_inline", mode="inline", status="running")
    await rows.add("job_done", status="completed")
    assert await rows.claim("job_inline", "wrk_a", 30) is None
    assert await rows.claim("job_done", "wrk_a", 30) is None
    assert await rows.claim("job_missing", "wrk_a", 30) is None
    assert await rows.status_of("job_done") == "completed"
    assert await rows.status_of("job_missing") == "missing"


async def test_renew_lease_only_for_the_owning_worker(rows: DemoRows) -> None:
    await rows.add("job_1")
    claimed = await rows.claim("job_1", "wrk_a", 1)
    assert claimed is not None and claimed.lease_expires_at is not None
    assert await rows.renew_lease("job_1", "wrk_a", 600)
    renewed = await rows.get("job_1")
    assert renewed is not None and renewed.lease_expires_at is not None
    assert renewed.lease_expires_at - claimed.lease_expires_at > timedelta(seconds=500)
    assert not await rows.renew_lease("job_1", "wrk_b", 600)
    assert not await rows.renew_lease("job_missing", "wrk_a", 600)


async def test_owner_reads_are_scoped_to_the_user(rows: DemoRows) -> None:
    await rows.add("job_a1", age=timedelta(seconds=2))
    await rows.add("job_a2", status="completed", age=timedelta(seconds=1))
    await rows.add("job_b1", user_id="usr_b")
    assert await rows.get_owned("tnt_a", "usr_a", "job_a1") is not None
    assert await rows.get_owned("tnt_a", "usr_a", "job_b1") is None
    assert await rows.get_owned("tnt_other", "usr_a", "job_a1") is None
    page = await rows.list_owned("tnt_a", "usr_a", status=None, limit=1, cursor=None)
    assert [j.id for j in page.items] == ["job_a2"] and page.has_more
    rest = await rows.list_owned("tnt_a", "usr_a", status=None, limit=5, cursor=page.next_cursor)
    assert [j.id for j in rest.items] == ["job_a1"]
    queued = await rows.list_owned("tnt_a", "usr_a", status="queued", limit=5, cursor=None)
    assert [j.id for j in queued.items] == ["job_a1"]


async def test_note_backend(rows: DemoRows) -> None:
    await rows.add("job_1")
    await rows.note_backend("job_1", "scaigrid", "node_1")
    job = await rows.get("job_1")
    assert job is not None and (job.backend_used, job.node_id) == ("scaigrid", "node_1")


async def test_sweep_queries_pick_old_queued_and_orphaned_async_jobs(rows: DemoRows) -> None:
    await rows.add("job_old", age=timedelta(minutes=10))
    await rows.add("job_older", age=timedelta(minutes=20))
    await rows.add("job_new")
    await rows.add("job_inline_q", mode="inline", age=timedelta(minutes=10))
    await rows.add("job_lapsed", status="running", worker_id="w", lease=timedelta(seconds=-1))
    await rows.add("job_released", status="running", worker_id="w")
    await rows.add("job_live", status="running", worker_id="w", lease=timedelta(minutes=1))
    await rows.add("job_inline_r", mode="inline", status="running")
    cutoff = utcnow() - timedelta(minutes=5)
    assert [j.id for j in await rows.queued_before(cutoff)] == ["job_older", "job_old"]
    assert [j.id for j in await rows.queued_before(cutoff, limit=1)] == ["job_older"]
    assert {j.id for j in await rows.orphaned()} == {"job_lapsed", "job_released"}


async def test_stale_inline_fails_only_old_running_inline_rows(rows: DemoRows) -> None:
    await rows.add("job_stale", mode="inline", status="running", age=timedelta(hours=7))
    await rows.add("job_other", mode="inline", status="running", age=timedelta(hours=7))
    await rows.add("job_recent", mode="inline", status="running")
    await rows.add("job_async", status="running", age=timedelta(hours=7))
    cutoff = utcnow() - timedelta(hours=6)
    assert await rows.stale_with_error(cutoff) == 2
    stale = await rows.get("job_stale")
    assert stale is not None and stale.status == "failed"
    assert stale.status_reason == "internal error" and stale.completed_at is not None
    assert stale.error == {"code": "INTERNAL_ERROR"}
    for job_id in ("job_recent", "job_async"):
        kept = await rows.get(job_id)
        assert kept is not None and kept.status == "running"
    await rows.add("job_plain", mode="inline", status="running", age=timedelta(hours=7))
    assert await rows.stale_inline(cutoff) == 1
    plain = await rows.get("job_plain")
    assert plain is not None and plain.status == "failed" and plain.error is None


async def test_lease_renewal_signals_a_job_that_is_gone(rows: DemoRows) -> None:
    await rows.add("job_1")
    assert await rows.claim("job_1", "wrk_a", 0.3) is not None
    async with lease_renewal(rows, "job_1", "wrk_a", 0.3) as gone:
        first = await rows.get("job_1")
        assert first is not None and first.lease_expires_at is not None
        await rows.delete("job_1")
        await asyncio.wait_for(gone.wait(), timeout=5)


class CountingRows(DemoRows):
    """Reports each successful renewal through an event."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(pool)
        self.renewed = asyncio.Event()

    async def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        ok = await super().renew_lease(job_id, worker_id, lease_s)
        if ok:
            self.renewed.set()
        return ok


async def test_lease_renewal_keeps_the_lease_alive(
    rows: DemoRows, pool: AsyncConnectionPool[Any]
) -> None:
    counting = CountingRows(pool)
    await rows.add("job_1")
    claimed = await rows.claim("job_1", "wrk_a", 0.3)
    assert claimed is not None and claimed.lease_expires_at is not None
    async with lease_renewal(counting, "job_1", "wrk_a", 0.3) as gone:
        await asyncio.wait_for(counting.renewed.wait(), timeout=5)
        current = await rows.get("job_1")
        assert current is not None and current.lease_expires_at is not None
        assert current.lease_expires_at > claimed.lease_expires_at
        assert not gone.is_set()


async def test_retry_if_transient_releases_and_defers(rows: DemoRows) -> None:
    await rows.add("job_1")
    job = await rows.claim("job_1", "wrk_a", 30)
    assert job is not None
    kwargs: dict[str, Any] = {"transient": {"BUSY"}, "max_attempts": 2, "log": log, "event": "e"}
    await retry_if_transient(rows, job, "BAD", **kwargs)  # not transient: returns
    with pytest.raises(Retry) as info:
        await retry_if_transient(rows, job, "BUSY", **kwargs)
    assert info.value.defer_score == 5000
    released = await rows.get("job_1")
    assert released is not None and released.lease_expires_at is None
    second = await rows.claim("job_1", "wrk_b", 30)
    assert second is not None and second.attempts == 2
    await retry_if_transient(rows, second, "BUSY", **kwargs)  # attempts used up: returns


async def test_sweeper_requeues_lost_and_reclaims_orphaned(
    rows: DemoRows, rds: aioredis.Redis
) -> None:
    queue = JobQueue(rds, "scaitest")
    metrics = ServiceMetrics("scaitest")
    await rows.add("job_lost", age=timedelta(minutes=10))
    await rows.add("job_held", age=timedelta(minutes=10))
    await queue.enqueue("process", "job_held", "x")
    await rows.add("job_orphan", status="running", worker_id="w", lease=timedelta(seconds=-1))
    sweeper = JobSweeper(
        queue,
        rows,
        "process",
        args=("x",),
        requeue_after_s=60,
        metrics=metrics,
        log=log,
        kind="demo_job",
    )
    assert await sweeper.requeue_lost() == ["job_lost", "job_orphan"]
    for job_id in ("job_lost", "job_held", "job_orphan"):
        assert await queue.known(job_id)
    assert await queue.depth() == 3
    depth = metrics.registry.get_sample_value("scaitest_queue_depth", {"queue": queue.name})
    assert depth == 3
    assert await sweeper.requeue_lost() == ["job_orphan"]  # still unclaimed, still queued
    assert await queue.depth() == 3
