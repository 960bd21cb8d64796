"""``transcribe_jobs``: the job rows of every transcription (scaiecho.md §5).

The row is the truth; the arq queue only carries job ids. Every read a caller can reach is
scoped by tenant *and* user (jobs are owner-only). Worker-side methods take bare job ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from scaicommon.jobrows import JobRows
from scaicommon.timefmt import format_ts

TERMINAL: Final = ("completed", "failed", "cancelled")
STATUSES: Final = ("queued", "running", "completed", "failed", "cancelled")


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


class JobStore(JobRows[Job]):
    """Repository of ``transcribe_jobs``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(pool, "transcribe_jobs", Job.from_row)

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

    # ----- sweeps (crons) -----------------------------------------------------------------

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
        await self._count("UPDATE transcribe_jobs SET audio_key = NULL WHERE id = %s", (job_id,))
