"""The SQL every async-job table shares (design §5): owner reads, claim/lease, sweep queries.

A service's job table (``transcribe_jobs``, ``synth_jobs``) has its own result columns, but
all of them carry the common set this module works on: ``id``, ``tenant_id``, ``user_id``,
``mode`` (``inline``/``async``), ``status`` (``queued``/``running``/terminal),
``status_reason``, ``backend_used``, ``node_id``, ``attempts``, ``worker_id``,
``lease_expires_at``, ``created_at``, ``started_at`` and ``completed_at``. A service store
subclasses :class:`JobRows` with its table and row type and adds its own writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Generic, LiteralString, Protocol, TypeAlias, TypeVar

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from scaicommon.pagination import FilterSpec, Page, fetch_tenant_page

#: A statement: literal SQL of a service's own table, or one composed by :meth:`JobRows._sql`.
Query: TypeAlias = str | sql.Composed

_OWNER_FILTERS: Final = {"user_id": FilterSpec("user_id"), "status": FilterSpec("status")}


class JobRow(Protocol):
    """What the shared job mechanics read from a service's row type."""

    @property
    def id(self) -> str:
        """The job id."""

    @property
    def status(self) -> str:
        """``queued``, ``running`` or a terminal status."""

    @property
    def attempts(self) -> int:
        """Attempts started so far."""

    @property
    def worker_id(self) -> str | None:
        """The worker that claimed the current attempt."""


RowT = TypeVar("RowT", bound=JobRow)


class JobRows(Generic[RowT]):
    """Repository base of one async-job table; rows come back as ``RowT`` via ``from_row``."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        table: str,
        from_row: Callable[[Mapping[str, Any]], RowT],
    ) -> None:
        self._pool = pool
        self.table = table
        self._from_row = from_row

    def _sql(self, template: LiteralString) -> sql.Composed:
        """``template`` with ``{table}`` filled in as a quoted identifier."""
        return sql.SQL(template).format(table=sql.Identifier(self.table))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection inside a transaction (for a change and its audit row together)."""
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    async def _one(
        self, query: Query, params: Sequence[Any], conn: AsyncConnection[Any] | None = None
    ) -> RowT | None:
        if conn is None:
            async with self._pool.connection() as own:
                return await self._one(query, params, own)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        return self._from_row(row) if row else None

    async def _many(self, query: Query, params: Sequence[Any]) -> list[RowT]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [self._from_row(r) for r in rows]

    async def _count(self, query: Query, params: Sequence[Any] = ()) -> int:
        """Run a write; the number of rows it touched."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return int(cur.rowcount)

    # ----- the owner's reads ----------------------------------------------------------------

    async def get_owned(self, tenant_id: str, user_id: str, job_id: str) -> RowT | None:
        """The caller's own job, or ``None`` (another user's job is ``None`` too)."""
        return await self._one(
            self._sql("SELECT * FROM {table} WHERE id = %s AND tenant_id = %s AND user_id = %s"),
            (job_id, tenant_id, user_id),
        )

    async def list_owned(
        self, tenant_id: str, user_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> Page[RowT]:
        """A newest-first page of the caller's jobs, optionally of one status."""
        page = await fetch_tenant_page(
            self._pool,
            self.table,
            tenant_id=tenant_id,
            filters={"user_id": user_id, "status": status},
            specs=_OWNER_FILTERS,
            limit=limit,
            cursor=cursor,
        )
        return page.map(self._from_row)

    # ----- worker side ----------------------------------------------------------------------

    async def get(self, job_id: str) -> RowT | None:
        """A job by id, unscoped (worker only)."""
        return await self._one(self._sql("SELECT * FROM {table} WHERE id = %s"), (job_id,))

    async def status_of(self, job_id: str) -> str:
        """The job's status, or ``missing`` when the row is gone."""
        current = await self.get(job_id)
        return current.status if current else "missing"

    async def claim(self, job_id: str, worker_id: str, lease_s: float) -> RowT | None:
        """Take an async job for one attempt: ``queued`` (or ``running`` with a lapsed lease or
        the same worker) becomes ``running`` with a fresh lease; ``None`` when it is not
        claimable (gone, finished, or leased by a live worker)."""
        return await self._one(
            self._sql(
                "UPDATE {table} SET status = 'running', attempts = attempts + 1,"
                " started_at = COALESCE(started_at, now()), worker_id = %s,"
                " lease_expires_at = now() + make_interval(secs => %s)"
                " WHERE id = %s AND mode = 'async' AND (status = 'queued' OR"
                " (status = 'running' AND"
                " (worker_id = %s OR lease_expires_at IS NULL OR lease_expires_at < now())))"
                " RETURNING *"
            ),
            (worker_id, lease_s, job_id, worker_id),
        )

    async def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend this worker's lease; ``False`` when the job is gone or no longer its own."""
        changed = await self._count(
            self._sql(
                "UPDATE {table} SET lease_expires_at = now() + make_interval(secs => %s)"
                " WHERE id = %s AND worker_id = %s AND status = 'running'"
            ),
            (lease_s, job_id, worker_id),
        )
        return changed > 0

    async def release(self, job_id: str, worker_id: str) -> None:
        """Give the lease back between attempts (the job stays ``running``)."""
        await self._count(
            self._sql(
                "UPDATE {table} SET lease_expires_at = NULL"
                " WHERE id = %s AND worker_id = %s AND status = 'running'"
            ),
            (job_id, worker_id),
        )

    async def note_backend(self, job_id: str, backend_used: str, node_id: str | None) -> None:
        """Record the backend chosen at dispatch."""
        await self._count(
            self._sql("UPDATE {table} SET backend_used = %s, node_id = %s WHERE id = %s"),
            (backend_used, node_id, job_id),
        )

    # ----- sweeps (crons) -------------------------------------------------------------------

    async def queued_before(self, cutoff: datetime, limit: int = 500) -> list[RowT]:
        """``queued`` async jobs created before ``cutoff``, oldest first."""
        return await self._many(
            self._sql(
                "SELECT * FROM {table} WHERE status = 'queued' AND mode = 'async'"
                " AND created_at < %s ORDER BY created_at LIMIT %s"
            ),
            (cutoff, limit),
        )

    async def orphaned(self, limit: int = 500) -> list[RowT]:
        """``running`` async jobs whose lease lapsed (their worker died or gave it back)."""
        return await self._many(
            self._sql(
                "SELECT * FROM {table} WHERE status = 'running' AND mode = 'async'"
                " AND (lease_expires_at IS NULL OR lease_expires_at < now())"
                " ORDER BY created_at LIMIT %s"
            ),
            (limit,),
        )

    async def stale_inline(self, cutoff: datetime) -> int:
        """Fail inline rows left ``running`` by a crashed API process before ``cutoff``."""
        return await self._fail_stale_inline(cutoff)

    async def _fail_stale_inline(self, cutoff: datetime, **also: Any) -> int:
        """:meth:`stale_inline`, also setting the columns ``also`` names (service-specific)."""
        extra = sql.SQL("").join(
            sql.SQL(" {} = %s,").format(sql.Identifier(column)) for column in also
        )
        query = sql.SQL(
            "UPDATE {table} SET status = 'failed', status_reason = 'internal error',{extra}"
            " completed_at = now() WHERE mode = 'inline' AND status = 'running'"
            " AND started_at < %s"
        ).format(table=sql.Identifier(self.table), extra=extra)
        return await self._count(query, (*also.values(), cutoff))
