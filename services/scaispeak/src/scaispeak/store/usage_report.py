"""Character usage sums over ``usage_records`` for ``GET /usage`` (scaispeak.md §12.5).

Usage rows carry no voice: the ``voice`` grouping takes the voice of the synthesis job a row
belongs to (``usage_records.job_id`` → ``synth_jobs.voice_id``). Rows without a job (preview,
stream segments) group under ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

GroupBy = Literal["user", "voice", "backend", "day"]
GROUPS: Final[tuple[str, ...]] = ("user", "voice", "backend", "day")

_KEY: Final[dict[str, str]] = {
    "user": "u.user_id",
    "voice": "j.voice_id",
    "backend": "u.backend",
    "day": "to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


@dataclass(frozen=True)
class UsageBucket:
    """Sums of one group (or of everything)."""

    key: str | None
    chars: int
    requests: int
    audio_ms: int


@dataclass(frozen=True)
class UsageSums:
    """The totals over a range, and the per-group sums when grouped (ordered by key)."""

    chars: int = 0
    requests: int = 0
    audio_ms: int = 0
    groups: list[UsageBucket] = field(default_factory=list)


class UsageReportStore:
    """Reads sums of a tenant's ``chars`` usage rows."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def sums(
        self, tenant_id: str, start: datetime, end: datetime, *, group_by: GroupBy | None
    ) -> UsageSums:
        """Characters, rows and output audio ms with ``start <= created_at < end``."""
        key = sql.SQL(_KEY[group_by]) if group_by else sql.SQL("NULL::text")
        join = (
            sql.SQL("LEFT JOIN synth_jobs j ON j.id = u.job_id")
            if group_by == "voice"
            else sql.SQL("")
        )
        query = sql.SQL(
            "SELECT {key} AS k, COALESCE(SUM(u.units), 0), COUNT(*),"
            " COALESCE(SUM(u.output_audio_ms), 0)"
            " FROM usage_records u {join}"
            " WHERE u.tenant_id = %s AND u.unit = 'chars'"
            " AND u.created_at >= %s AND u.created_at < %s"
            " GROUP BY k ORDER BY k NULLS LAST"
        ).format(key=key, join=join)
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, (tenant_id, start, end))
            rows = await cur.fetchall()
        groups = [
            UsageBucket(
                key=None if k is None else str(k),
                chars=int(chars),
                requests=int(count),
                audio_ms=int(audio_ms),
            )
            for k, chars, count, audio_ms in rows
        ]
        return UsageSums(
            chars=sum(g.chars for g in groups),
            requests=sum(g.requests for g in groups),
            audio_ms=sum(g.audio_ms for g in groups),
            groups=groups if group_by else [],
        )
