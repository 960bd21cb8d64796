"""``blocklist_entries``: a tenant's blocked text patterns (scaispeak.md §12.2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from scaicommon.pagination import Page, fetch_tenant_page
from scaicommon.timefmt import format_ts

MATCH_KINDS: Final = ("substring", "regex")


@dataclass(frozen=True)
class BlocklistEntry:
    """One ``blocklist_entries`` row."""

    id: str
    tenant_id: str
    pattern: str
    match: str
    description: str | None
    created_by: str
    request_id: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BlocklistEntry:
        """An entry from a ``dict_row``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_api(self) -> dict[str, Any]:
        """The entry as ``GET /admin/blocklist`` lists it."""
        return {
            "id": self.id,
            "pattern": self.pattern,
            "match": self.match,
            "description": self.description,
            "created_by": self.created_by,
            "created_at": format_ts(self.created_at),
        }


@dataclass(frozen=True)
class NewBlocklistEntry:
    """What a new entry is made of (validated by the service)."""

    id: str
    tenant_id: str
    pattern: str
    match: str
    description: str | None
    created_by: str
    request_id: str


class BlocklistStore:
    """Repository of ``blocklist_entries``; writes take the caller's transaction."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def insert(self, conn: AsyncConnection[Any], entry: NewBlocklistEntry) -> BlocklistEntry:
        """Insert ``entry`` on ``conn`` and return the row."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "INSERT INTO blocklist_entries"
                " (id, tenant_id, pattern, match, description, created_by, request_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (
                    entry.id,
                    entry.tenant_id,
                    entry.pattern,
                    entry.match,
                    entry.description,
                    entry.created_by,
                    entry.request_id,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return BlocklistEntry.from_row(row)

    async def delete(
        self, conn: AsyncConnection[Any], tenant_id: str, entry_id: str
    ) -> BlocklistEntry | None:
        """Delete the tenant's entry on ``conn``; the deleted row, or ``None`` when unknown."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "DELETE FROM blocklist_entries WHERE tenant_id = %s AND id = %s RETURNING *",
                (tenant_id, entry_id),
            )
            row = await cur.fetchone()
        return BlocklistEntry.from_row(row) if row else None

    async def page(self, tenant_id: str, *, limit: int, cursor: str | None) -> Page[BlocklistEntry]:
        """One page of the tenant's entries, newest first."""
        page = await fetch_tenant_page(
            self._pool,
            "blocklist_entries",
            tenant_id=tenant_id,
            filters=None,
            specs={},
            limit=limit,
            cursor=cursor,
        )
        return page.map(BlocklistEntry.from_row)

    async def all_for(self, tenant_id: str) -> list[BlocklistEntry]:
        """Every entry of the tenant, oldest first (the order matching reports hits in)."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT * FROM blocklist_entries WHERE tenant_id = %s ORDER BY created_at, id",
                (tenant_id,),
            )
            rows = await cur.fetchall()
        return [BlocklistEntry.from_row(r) for r in rows]
