"""``transcribe_jobs``: the job rows of every transcription (scaiecho.md §5).

The row is the truth; the arq queue only carries job ids. Every read a caller can reach is
scoped by tenant *and* user (jobs are owner-only). Worker-side methods take bare job ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from scaicommon.pagination import FilterSpec, Page, fetch_tenant_page
from scaicommon.timefmt import format_ts

TERMINAL: Final = ("completed", "failed", "cancelled")
STATUSES: Final = ("queued", "running", "completed", "failed", "cancelled")
_LIST_FILTERS: Final = {"user_id": FilterSpec("user_id"), "status": FilterSpec("status")}


@dataclass(frozen=True)
class Job:
    """One ``transcribe_jobs`` row."""

    id: str
    tenant_id: str
    user_id: str
    partner_id: str | None
    api_key_id: str | None
    mode: str
    source: str
    status: str
    status_reason: str | None
    options: dict[str, Any]
    audio_key: str | None
    audio_ext: str | None
    audio_sha256: str | None
    audio_bytes: int
    declared_duration_ms: int | None
    transcript: str | None
    segments: list[dict[str, Any]] | None
    backend_used: str | None
    node_id: str | None
    language_detected: str | None
    audio_duration_ms: int | None
    attempts: int
    worker_id: str | None
    lease_expires_at: datetime | None
    request_id: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """A job from a ``dict_row``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def terminal(self) -> bool:
        """``completed``, ``failed`` or ``cancelled``."""
        return self.status in TERMINAL

    def to_api(self, *, with_result: bool = True) -> dict[str, Any]:
        """The job object of §5.1 (list items leave out ``transcript`` and ``segments``)."""
        out: dict[str, Any] = {"job_id": self.id, "status": self.status}
        out["status_reason"] = self.status_reason
        if with_result:
            out["transcript"] = self.transcript
            out["segments"] = self.segments
        out.update(
            {
                "backend_used": self.backend_used,
                "language_detected": self.language_detected,
                "audio_duration_ms": self.audio_duration_ms,
                "audio_bytes": self.audio_bytes,
                "created_at": format_ts(self.created_at),
                "started_at": format_ts(self.started_at) if self.started_at else None,
                "completed_at": format_ts(self.completed_at) if self.completed_at else None,
            }
        )
        return out


@dataclass(frozen=True)
class NewJob:
    """What a new row starts with."""

    id: str
    tenant_id: str
    user_id: str
    partner_id: str | None
    api_key_id: str | None
    mode: str
    source: str
    status: str
    options: Mapping[str, Any]
    audio_bytes: int
    request_id: str
    audio_key: str | None = None
    audio_ext: str | None = None
    audio_sha256: str | None = None
    declared_duration_ms: int | None = None


@dataclass(frozen=True)
class JobResult:
    """What a completed dispatch writes."""

    transcript: str
    segments: Sequence[Mapping[str, Any]]
    backend_used: str
    node_id: str | None
    language_detected: str | None
    audio_duration_ms: int


class JobStore:
    """Repository of ``transcribe_jobs``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def _one(self, query: str, params: Sequence[Any]) -> Job | None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        return Job.from_row(row) if row else None

    async def _many(self, query: str, params: Sequence[Any]) -> list[Job]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [Job.from_row(r) for r in rows]

    # ----- writes from the API ----------------------------------------------------------

    async def insert(self, job: NewJob) -> Job:
        """Insert a row (``running`` for inline calls, ``queued`` for async ones)."""
        row = await self._one(
            "INSERT INTO transcribe_jobs (id, tenant_id, user_id, partner_id, api_key_id, mode,"
            " source, status, options, audio_key, audio_ext, audio_sha256, audio_bytes,"
            " declared_duration_ms, request_id, started_at, attempts)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " CASE WHEN %s THEN now() END, %s) RETURNING *",
            (
                job.id,
                job.tenant_id,
                job.user_id,
                job.partner_id,
                job.api_key_id,
                job.mode,
                job.source,
                job.status,
                Jsonb(dict(job.options)),
                job.audio_key,
                job.audio_ext,
                job.audio_sha256,
                job.audio_bytes,
                job.declared_duration_ms,
                job.request_id,
                job.status == "running",
                1 if job.status == "running" else 0,
            ),
        )
        assert row is not None
        return row

    async def get_owned(self, tenant_id: str, user_id: str, job_id: str) -> Job | None:
        """The caller's own job, or ``None`` (another user's job is ``None`` too)."""
        return await self._one(
            "SELECT * FROM transcribe_jobs WHERE id = %s AND tenant_id = %s AND user_id = %s",
            (job_id, tenant_id, user_id),
        )

    async def list_owned(
        self, tenant_id: str, user_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> Page[Job]:
        """A newest-first page of the caller's jobs, optionally of one status."""
        page = await fetch_tenant_page(
            self._pool,
            "transcribe_jobs",
            tenant_id=tenant_id,
            filters={"user_id": user_id, "status": status},
            specs=_LIST_FILTERS,
            limit=limit,
            cursor=cursor,
        )
        return page.map(Job.from_row)

    async def cancel_queued(self, tenant_id: str, user_id: str, job_id: str) -> Job | None:
        """``queued`` → ``cancelled`` ("cancelled by user"); ``None`` when not queued."""
        return await self._one(
            "UPDATE transcribe_jobs SET status = 'cancelled', status_reason = 'cancelled by user',"
            " completed_at = now(), lease_expires_at = NULL"
            " WHERE id = %s AND tenant_id = %s AND user_id = %s AND status = 'queued'"
            " RETURNING *",
            (job_id, tenant_id, user_id),
        )

    async def delete_finished(self, tenant_id: str, user_id: str, job_id: str) -> Job | None:
        """Delete a terminal job; ``None`` when it is not terminal (or not the caller's)."""
        return await self._one(
            "DELETE FROM transcribe_jobs WHERE id = %s AND tenant_id = %s AND user_id = %s"
            " AND status IN ('completed', 'failed', 'cancelled') RETURNING *",
            (job_id, tenant_id, user_id),
        )

    # ----- worker side --------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """A job by id, unscoped (worker only)."""
        return await self._one("SELECT * FROM transcribe_jobs WHERE id = %s", (job_id,))

    async def claim(self, job_id: str, worker_id: str, lease_s: float) -> Job | None:
        """Take a job for one attempt: ``queued`` (or ``running`` with a lapsed lease or the
        same worker) becomes ``running`` with a fresh lease; ``None`` when it is not claimable
        (cancelled, finished, or leased by a live worker)."""
        return await self._one(
            "UPDATE transcribe_jobs SET status = 'running', attempts = attempts + 1,"
            " started_at = COALESCE(started_at, now()), worker_id = %s,"
            " lease_expires_at = now() + make_interval(secs => %s)"
            " WHERE id = %s AND (status = 'queued' OR (status = 'running' AND"
            " (worker_id = %s OR lease_expires_at IS NULL OR lease_expires_at < now())))"
            " RETURNING *",
            (worker_id, lease_s, job_id, worker_id),
        )

    async def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend this worker's lease; ``False`` when the job is no longer its own."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE transcribe_jobs SET lease_expires_at = now() + make_interval(secs => %s)"
                " WHERE id = %s AND worker_id = %s AND status = 'running'",
                (lease_s, job_id, worker_id),
            )
            return bool(cur.rowcount > 0)

    async def release(self, job_id: str, worker_id: str) -> None:
        """Give the lease back between attempts (the job stays ``running``)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE transcribe_jobs SET lease_expires_at = NULL"
                " WHERE id = %s AND worker_id = %s AND status = 'running'",
                (job_id, worker_id),
            )

    async def complete(self, job_id: str, result: JobResult) -> Job | None:
        """``running`` → ``completed`` with the result; ``None`` when the job was not running."""
        return await self._one(
            "UPDATE transcribe_jobs SET status = 'completed', status_reason = NULL,"
            " transcript = %s, segments = %s, backend_used = %s, node_id = %s,"
            " language_detected = %s, audio_duration_ms = %s, completed_at = now(),"
            " lease_expires_at = NULL WHERE id = %s AND status = 'running' RETURNING *",
            (
                result.transcript,
                Jsonb([dict(s) for s in result.segments]),
                result.backend_used,
                result.node_id,
                result.language_detected,
                result.audio_duration_ms,
                job_id,
            ),
        )

    async def fail(
        self,
        job_id: str,
        reason: str,
        *,
        backend_used: str | None = None,
        audio_duration_ms: int | None = None,
    ) -> Job | None:
        """A non-terminal job → ``failed`` with ``reason``; ``None`` when already terminal."""
        return await self._one(
            "UPDATE transcribe_jobs SET status = 'failed', status_reason = %s,"
            " backend_used = COALESCE(%s, backend_used),"
            " audio_duration_ms = COALESCE(%s, audio_duration_ms),"
            " completed_at = now(), lease_expires_at = NULL"
            " WHERE id = %s AND status IN ('queued', 'running') RETURNING *",
            (reason, backend_used, audio_duration_ms, job_id),
        )

    async def note_backend(self, job_id: str, backend_used: str, node_id: str | None) -> None:
        """Record the backend chosen at dispatch (§5.1: set at dispatch)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE transcribe_jobs SET backend_used = %s, node_id = %s WHERE id = %s",
                (backend_used, node_id, job_id),
            )

    # ----- sweeps (crons) -----------------------------------------------------------------

    async def queued_before(self, cutoff: datetime, limit: int = 500) -> list[Job]:
        """``queued`` async jobs created before ``cutoff``, oldest first."""
        return await self._many(
            "SELECT * FROM transcribe_jobs WHERE status = 'queued' AND mode = 'async'"
            " AND created_at < %s ORDER BY created_at LIMIT %s",
            (cutoff, limit),
        )

    async def orphaned(self, limit: int = 500) -> list[Job]:
        """``running`` async jobs whose lease lapsed (their worker died or gave it back)."""
        return await self._many(
            "SELECT * FROM transcribe_jobs WHERE status = 'running' AND mode = 'async'"
            " AND (lease_expires_at IS NULL OR lease_expires_at < now())"
            " ORDER BY created_at LIMIT %s",
            (limit,),
        )

    async def stale_inline(self, cutoff: datetime) -> int:
        """Fail inline rows left ``running`` by a crashed API process before ``cutoff``."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE transcribe_jobs SET status = 'failed', status_reason = 'internal error',"
                " completed_at = now() WHERE mode = 'inline' AND status = 'running'"
                " AND started_at < %s",
                (cutoff,),
            )
            return int(cur.rowcount)

    async def purge_finished(self, older_than: timedelta) -> list[Job]:
        """Delete terminal jobs that finished more than ``older_than`` ago; returns them."""
        return await self._many(
            "DELETE FROM transcribe_jobs WHERE status IN ('completed', 'failed', 'cancelled')"
            " AND completed_at < now() - %s RETURNING *",
            (older_than,),
        )

    async def live_audio_keys(self) -> set[str]:
        """Staged object keys still referenced by a non-terminal job."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT audio_key FROM transcribe_jobs WHERE audio_key IS NOT NULL"
                " AND status IN ('queued', 'running')"
            )
            rows = await cur.fetchall()
        return {str(r[0]) for r in rows}

    async def clear_audio_key(self, job_id: str) -> None:
        """Forget the staged object once it is deleted."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE transcribe_jobs SET audio_key = NULL WHERE id = %s", (job_id,)
            )
