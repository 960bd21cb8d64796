"""``synth_jobs``: the job rows of every synthesis (scaispeak.md §5).

The row is the truth; the arq queue only carries job ids. Every read a caller can reach is
scoped by tenant *and* user (jobs are owner-only, §1.8). Worker-side methods take bare ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from scaicommon.jobrows import JobRows
from scaicommon.timefmt import format_ts

STATUSES: Final = ("queued", "running", "completed", "failed")
TERMINAL: Final = ("completed", "failed")


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


class SynthJobStore(JobRows[SynthJob]):
    """Repository of ``synth_jobs``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(pool, "synth_jobs", SynthJob.from_row)

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

    async def stale_inline(self, cutoff: datetime) -> int:
        """Fail inline rows left ``running`` by a crashed API process before ``cutoff``."""
        return await self._fail_stale_inline(
            cutoff,
            error=Jsonb({"code": "INTERNAL_ERROR", "message": "the request ended unexpectedly"}),
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
