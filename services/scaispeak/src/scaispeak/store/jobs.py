"""``synth_jobs``: the job rows of every synthesis (scaispeak.md §5).

The row is the truth; the arq queue only carries job ids. Every read a caller can reach is
scoped by tenant *and* user (jobs are owner-only, §1.8). Worker-side methods take bare ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from scaicommon.pagination import FilterSpec, Page, fetch_tenant_page
from scaicommon.timefmt import format_ts

STATUSES: Final = ("queued", "running", "completed", "failed")
TERMINAL: Final = ("completed", "failed")
_LIST_FILTERS: Final = {"user_id": FilterSpec("user_id"), "status": FilterSpec("status")}


@dataclass(frozen=True)
class SynthJob:
    """One ``synth_jobs`` row."""

    id: str
    tenant_id: str
    user_id: str
    partner_id: str | None
    api_key_id: str | None
    mode: str
    source: str
    status: str
    status_reason: str | None
    error: dict[str, Any] | None
    voice_id: str
    chars: int
    params: dict[str, Any]
    backend_preference: str
    response_format: str
    sample_rate: int
    text_key: str | None
    output_key: str | None
    output_bytes: int | None
    saved_to: dict[str, Any] | None
    backend_used: str | None
    node_id: str | None
    audio_duration_ms: int | None
    attempts: int
    worker_id: str | None
    lease_expires_at: datetime | None
    request_id: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SynthJob:
        """A job from a ``dict_row``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def terminal(self) -> bool:
        """``completed`` or ``failed``."""
        return self.status in TERMINAL

    def to_api(self, audio_url: str | None) -> dict[str, Any]:
        """The job record of §5.1; ``audio_url`` is presigned by the caller on every read."""
        return {
            "job_id": self.id,
            "mode": self.mode,
            "status": self.status,
            "status_reason": self.status_reason if self.status == "failed" else None,
            "error": self.error if self.status == "failed" else None,
            "voice_id": self.voice_id,
            "chars": self.chars,
            "backend_used": self.backend_used,
            "response_format": self.response_format,
            "sample_rate": self.sample_rate,
            "audio_duration_ms": self.audio_duration_ms,
            "created_at": format_ts(self.created_at),
            "started_at": format_ts(self.started_at),
            "completed_at": format_ts(self.completed_at),
            "audio_url": audio_url if self.output_key else None,
            "saved_to": self.saved_to,
        }


@dataclass(frozen=True)
class NewSynthJob:
    """What a new row starts with (``running`` for inline calls, ``queued`` for async ones)."""

    id: str
    tenant_id: str
    user_id: str
    partner_id: str | None
    api_key_id: str | None
    mode: str
    source: str
    status: str
    voice_id: str
    chars: int
    response_format: str
    sample_rate: int
    request_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    backend_preference: str = "any"
    text_key: str | None = None
    saved_to: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SynthOutput:
    """What a finished synthesis writes to its row."""

    backend_used: str
    node_id: str | None
    audio_duration_ms: int
    output_key: str | None = None
    output_bytes: int | None = None
    saved_to: Mapping[str, Any] | None = None


def _json(value: Mapping[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(dict(value))


class SynthJobStore:
    """Repository of ``synth_jobs``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection inside a transaction (for a change and its audit row together)."""
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    async def _one(
        self, query: str, params: Sequence[Any], conn: AsyncConnection[Any] | None = None
    ) -> SynthJob | None:
        if conn is not None:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, params)
                row = await cur.fetchone()
            return SynthJob.from_row(row) if row else None
        async with self._pool.connection() as own:
            return await self._one(query, params, own)

    async def _many(self, query: str, params: Sequence[Any]) -> list[SynthJob]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [SynthJob.from_row(r) for r in rows]

    async def _count(self, query: str, params: Sequence[Any]) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return int(cur.rowcount)

    # ----- writes from the API ----------------------------------------------------------

    async def insert(self, job: NewSynthJob) -> SynthJob:
        """Insert a row; a ``running`` one counts its first attempt and starts now."""
        running = job.status == "running"
        row = await self._one(
            "INSERT INTO synth_jobs (id, tenant_id, user_id, partner_id, api_key_id, mode, source,"
            " status, voice_id, chars, params, backend_preference, response_format, sample_rate,"
            " text_key, saved_to, request_id, attempts, started_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " CASE WHEN %s THEN now() END) RETURNING *",
            (
                job.id,
                job.tenant_id,
                job.user_id,
                job.partner_id,
                job.api_key_id,
                job.mode,
                job.source,
                job.status,
                job.voice_id,
                job.chars,
                Jsonb(dict(job.params)),
                job.backend_preference,
                job.response_format,
                job.sample_rate,
                job.text_key,
                _json(job.saved_to),
                job.request_id,
                1 if running else 0,
                running,
            ),
        )
        assert row is not None
        return row

    async def get_owned(self, tenant_id: str, user_id: str, job_id: str) -> SynthJob | None:
        """The caller's own job, or ``None`` (another user's job is ``None`` too)."""
        return await self._one(
            "SELECT * FROM synth_jobs WHERE id = %s AND tenant_id = %s AND user_id = %s",
            (job_id, tenant_id, user_id),
        )

    async def list_owned(
        self, tenant_id: str, user_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> Page[SynthJob]:
        """A newest-first page of the caller's jobs, optionally of one status."""
        page = await fetch_tenant_page(
            self._pool,
            "synth_jobs",
            tenant_id=tenant_id,
            filters={"user_id": user_id, "status": status},
            specs=_LIST_FILTERS,
            limit=limit,
            cursor=cursor,
        )
        return page.map(SynthJob.from_row)

    async def delete_owned(
        self,
        tenant_id: str,
        user_id: str,
        job_id: str,
        *,
        conn: AsyncConnection[Any] | None = None,
    ) -> SynthJob | None:
        """Delete the caller's job whatever its status; the deleted row, or ``None``."""
        return await self._one(
            "DELETE FROM synth_jobs WHERE id = %s AND tenant_id = %s AND user_id = %s RETURNING *",
            (job_id, tenant_id, user_id),
            conn,
        )

    # ----- worker side (and the inline path, which owns its row) -----------------------------

    async def get(self, job_id: str) -> SynthJob | None:
        """A job by id, unscoped (worker only)."""
        return await self._one("SELECT * FROM synth_jobs WHERE id = %s", (job_id,))

    async def claim(self, job_id: str, worker_id: str, lease_s: float) -> SynthJob | None:
        """Take an async job for one attempt: ``queued`` (or ``running`` with a lapsed lease or
        the same worker) becomes ``running`` with a fresh lease; ``None`` when not claimable."""
        return await self._one(
            "UPDATE synth_jobs SET status = 'running', attempts = attempts + 1,"
            " started_at = COALESCE(started_at, now()), worker_id = %s,"
            " lease_expires_at = now() + make_interval(secs => %s)"
            " WHERE id = %s AND mode = 'async' AND (status = 'queued' OR (status = 'running' AND"
            " (worker_id = %s OR lease_expires_at IS NULL OR lease_expires_at < now())))"
            " RETURNING *",
            (worker_id, lease_s, job_id, worker_id),
        )

    async def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend this worker's lease; ``False`` when the job is gone or no longer its own."""
        changed = await self._count(
            "UPDATE synth_jobs SET lease_expires_at = now() + make_interval(secs => %s)"
            " WHERE id = %s AND worker_id = %s AND status = 'running'",
            (lease_s, job_id, worker_id),
        )
        return changed > 0

    async def release(self, job_id: str, worker_id: str) -> None:
        """Give the lease back between attempts (the job stays ``running``)."""
        await self._count(
            "UPDATE synth_jobs SET lease_expires_at = NULL"
            " WHERE id = %s AND worker_id = %s AND status = 'running'",
            (job_id, worker_id),
        )

    async def note_backend(self, job_id: str, backend: str, node_id: str | None) -> None:
        """Record the backend chosen at dispatch."""
        await self._count(
            "UPDATE synth_jobs SET backend_used = %s, node_id = %s WHERE id = %s",
            (backend, node_id, job_id),
        )

    async def complete(self, job_id: str, output: SynthOutput) -> SynthJob | None:
        """``running`` → ``completed``; ``None`` when the job is gone or not running."""
        return await self._one(
            "UPDATE synth_jobs SET status = 'completed', status_reason = NULL, error = NULL,"
            " backend_used = %s, node_id = %s, audio_duration_ms = %s,"
            " output_key = COALESCE(%s, output_key), output_bytes = COALESCE(%s, output_bytes),"
            " saved_to = COALESCE(%s, saved_to), completed_at = now(), lease_expires_at = NULL"
            " WHERE id = %s AND status = 'running' RETURNING *",
            (
                output.backend_used,
                output.node_id,
                output.audio_duration_ms,
                output.output_key,
                output.output_bytes,
                _json(output.saved_to),
                job_id,
            ),
        )

    async def fail(
        self,
        job_id: str,
        reason: str,
        error: Mapping[str, Any] | None,
        *,
        output: SynthOutput | None = None,
    ) -> SynthJob | None:
        """A live job → ``failed``; ``output`` keeps audio made before a late failure.

        ``None`` when the job is gone or already terminal.
        """
        out = output
        return await self._one(
            "UPDATE synth_jobs SET status = 'failed', status_reason = %s, error = %s,"
            " backend_used = COALESCE(%s, backend_used), node_id = COALESCE(%s, node_id),"
            " audio_duration_ms = COALESCE(%s, audio_duration_ms),"
            " output_key = COALESCE(%s, output_key), output_bytes = COALESCE(%s, output_bytes),"
            " saved_to = COALESCE(%s, saved_to), completed_at = now(), lease_expires_at = NULL"
            " WHERE id = %s AND status IN ('queued', 'running') RETURNING *",
            (
                reason,
                _json(error),
                out.backend_used if out else None,
                out.node_id if out else None,
                out.audio_duration_ms if out else None,
                out.output_key if out else None,
                out.output_bytes if out else None,
                _json(out.saved_to) if out else None,
                job_id,
            ),
        )

    async def clear_text_key(self, job_id: str) -> None:
        """Forget the staged text once it is deleted."""
        await self._count("UPDATE synth_jobs SET text_key = NULL WHERE id = %s", (job_id,))

    # ----- sweeps (crons) -----------------------------------------------------------------

    async def queued_before(self, cutoff: datetime, limit: int = 500) -> list[SynthJob]:
        """``queued`` async jobs created before ``cutoff``, oldest first."""
        return await self._many(
            "SELECT * FROM synth_jobs WHERE status = 'queued' AND mode = 'async'"
            " AND created_at < %s ORDER BY created_at LIMIT %s",
            (cutoff, limit),
        )

    async def orphaned(self, limit: int = 500) -> list[SynthJob]:
        """``running`` async jobs whose lease lapsed (their worker died or gave it back)."""
        return await self._many(
            "SELECT * FROM synth_jobs WHERE status = 'running' AND mode = 'async'"
            " AND (lease_expires_at IS NULL OR lease_expires_at < now())"
            " ORDER BY created_at LIMIT %s",
            (limit,),
        )

    async def stale_inline(self, cutoff: datetime) -> int:
        """Fail inline rows left ``running`` by a crashed API process before ``cutoff``."""
        return await self._count(
            "UPDATE synth_jobs SET status = 'failed', status_reason = 'internal error',"
            " error = %s, completed_at = now() WHERE mode = 'inline' AND status = 'running'"
            " AND started_at < %s",
            (
                Jsonb({"code": "INTERNAL_ERROR", "message": "the request ended unexpectedly"}),
                cutoff,
            ),
        )

    async def expire_outputs(self, older_than: timedelta, limit: int = 500) -> list[str]:
        """Drop the output key of jobs finished more than ``older_than`` ago; return the keys."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "WITH old AS (SELECT id, output_key FROM synth_jobs WHERE output_key IS NOT NULL"
                " AND completed_at < now() - %s ORDER BY completed_at LIMIT %s FOR UPDATE)"
                " UPDATE synth_jobs j SET output_key = NULL FROM old WHERE j.id = old.id"
                " RETURNING old.output_key",
                (older_than, limit),
            )
            rows = await cur.fetchall()
        return [str(r[0]) for r in rows]

    async def live_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` a job row still references (as text or output)."""
        if not keys:
            return set()
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT text_key FROM synth_jobs WHERE text_key = ANY(%s)"
                " UNION SELECT output_key FROM synth_jobs WHERE output_key = ANY(%s)",
                (list(keys), list(keys)),
            )
            rows = await cur.fetchall()
        return {str(r[0]) for r in rows if r[0] is not None}
