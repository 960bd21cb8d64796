"""Read-only SQL behind ``GET /admin/dashboard`` (scaiecho.md §10): one tenant's job figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from scaiecho.store.jobs import STATUSES

# Every window is computed from the database clock, like the rows' own timestamps.
_QUEUED: Final = "SELECT count(*) FROM transcribe_jobs WHERE tenant_id = %s AND status = 'queued'"
_BY_STATUS: Final = (
    "SELECT status, count(*) FROM transcribe_jobs WHERE tenant_id = %s"
    " AND created_at >= now() - make_interval(secs => %s) GROUP BY status"
)
_PERCENTILES: Final = (
    "SELECT"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at)),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at)),"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at))"
    " FROM transcribe_jobs WHERE tenant_id = %s AND mode = 'async' AND status = 'completed'"
    " AND completed_at >= now() - make_interval(secs => %s)"
)


@dataclass(frozen=True)
class Percentiles:
    """p50/p95 in whole milliseconds; ``None`` when there is no data."""

    p50: int | None = None
    p95: int | None = None


@dataclass(frozen=True)
class TenantJobStats:
    """A tenant's job figures for the dashboard."""

    queued: int
    by_status: dict[str, int] = field(default_factory=dict)
    job_latency: Percentiles = Percentiles()
    queue_wait: Percentiles = Percentiles()


def _ms(value: Any) -> int | None:
    # Seconds (from extract(epoch ...)) to whole milliseconds.
    return None if value is None else round(float(value) * 1000)


class DashboardStore:
    """Aggregates over ``transcribe_jobs`` for one tenant."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def tenant_stats(self, tenant_id: str, window_s: float = 86400.0) -> TenantJobStats:
        """Queued jobs now, jobs created in the window by status (every status present), and
        p50/p95 of ``completed_at − created_at`` and ``started_at − created_at`` over async
        jobs completed in the window (``percentile_cont``; NULLs are left out)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_QUEUED, (tenant_id,))
            queued_row = await cur.fetchone()
            cur = await conn.execute(_BY_STATUS, (tenant_id, window_s))
            status_rows = await cur.fetchall()
            cur = await conn.execute(_PERCENTILES, (tenant_id, window_s))
            pct = await cur.fetchone()
        by_status = dict.fromkeys(STATUSES, 0)
        for status, count in status_rows:
            by_status[str(status)] = int(count)
        latency = Percentiles(_ms(pct[0]), _ms(pct[1])) if pct else Percentiles()
        wait = Percentiles(_ms(pct[2]), _ms(pct[3])) if pct else Percentiles()
        return TenantJobStats(
            queued=int(queued_row[0]) if queued_row else 0,
            by_status=by_status,
            job_latency=latency,
            queue_wait=wait,
        )
