"""``limit``/``cursor`` parsing, the keyset cursor codec and page assembly (platform §2.5).

Lists are newest first by ``(created_at DESC, id DESC)``. A cursor is base64url (no padding)
of the JSON ``{"v":1,"k":[<created_at>,<id>],"f":"<8 hex>"}``, where ``f`` is the first 8 hex
characters of the SHA-256 of the canonical filter set of the request that produced it. A cursor
that does not decode, or was made under other filters, is a ``VALIDATION_ERROR`` on ``cursor``.

The timestamp inside the cursor keeps microseconds (Postgres precision): truncating it to the
milliseconds of the JSON format would skip rows created within the same millisecond.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Generic, TypeVar

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from scaicommon.errors import validation_error
from scaicommon.timefmt import format_ts, parse_ts

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
# Usage and audit lists (§2.5).
LOG_DEFAULT_LIMIT: Final = 100
LOG_MAX_LIMIT: Final = 1000

CURSOR_VERSION: Final = 1
_MAX_CURSOR_CHARS: Final = 2048
_INT_RE: Final = re.compile(r"^[+-]?[0-9]{1,12}$")

T = TypeVar("T")
CursorKey = tuple[datetime, str]


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """Parse the ``limit`` query parameter; out of range is an error, never clamped.

    ``None`` (absent) gives ``default``. Anything that is not a base-10 integer in
    ``1..maximum`` raises ``VALIDATION_ERROR`` on field ``limit``.
    """
    if raw is None:
        return default
    text = raw.strip()
    if not _INT_RE.match(text):
        raise validation_error("limit", f"expected an integer from 1 to {maximum}")
    value = int(text)
    if not 1 <= value <= maximum:
        raise validation_error("limit", f"must be from 1 to {maximum}, got {value}")
    return value


def parse_log_limit(raw: str | None) -> int:
    """``limit`` for usage and audit lists: default 100, allowed 1 to 1000."""
    return parse_limit(raw, default=LOG_DEFAULT_LIMIT, maximum=LOG_MAX_LIMIT)


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_canonical_value(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return value


def filter_hash(filters: Mapping[str, Any]) -> str:
    """First 8 hex chars of SHA-256 of the canonical filter set.

    Canonical: ``None`` values are dropped (absent and ``None`` are the same filter), keys are
    sorted, timestamps are ISO Z, JSON is compact.
    """
    canonical = json.dumps(
        _canonical_value(filters), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]


def _iso_micro(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("cursor timestamps must be aware datetimes")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_cursor(created_at: datetime, id: str, filters: Mapping[str, Any]) -> str:
    """The opaque cursor that continues after the row ``(created_at, id)`` under ``filters``."""
    body = {"v": CURSOR_VERSION, "k": [_iso_micro(created_at), id], "f": filter_hash(filters)}
    raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _bad_cursor(message: str = "not a cursor returned by this list") -> Exception:
    return validation_error("cursor", message)


def decode_cursor(raw: str, filters: Mapping[str, Any]) -> CursorKey:
    """Decode a cursor made under the same ``filters``; returns ``(created_at, id)``.

    Raises ``VALIDATION_ERROR`` on field ``cursor`` for anything undecodable or for a cursor
    whose filter hash differs from this request's.
    """
    text = raw.strip()
    if not text or len(text) > _MAX_CURSOR_CHARS:
        raise _bad_cursor()
    try:
        padded = text + "=" * (-len(text) % 4)
        decoded = base64.b64decode(padded, altchars=b"-_", validate=True)
        body = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad_cursor() from None
    if not isinstance(body, dict) or body.get("v") != CURSOR_VERSION:
        raise _bad_cursor()
    key, fingerprint = body.get("k"), body.get("f")
    if not (
        isinstance(key, list)
        and len(key) == 2
        and all(isinstance(part, str) for part in key)
        and isinstance(fingerprint, str)
    ):
        raise _bad_cursor()
    try:
        created_at = parse_ts(key[0])
    except ValueError:
        raise _bad_cursor() from None
    if not key[1]:
        raise _bad_cursor()
    if fingerprint != filter_hash(filters):
        raise _bad_cursor("the cursor was issued for different filters")
    return created_at, key[1]


def decode_optional_cursor(raw: str | None, filters: Mapping[str, Any]) -> CursorKey | None:
    """:func:`decode_cursor`, with ``None`` (first page) passed through."""
    return None if raw is None else decode_cursor(raw, filters)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset-paginated list."""

    items: list[T]
    has_more: bool
    next_cursor: str | None

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[T],
        limit: int,
        *,
        key: Callable[[T], CursorKey],
        filters: Mapping[str, Any],
    ) -> Page[T]:
        """Build a page from up to ``limit + 1`` rows fetched newest first.

        ``key`` returns a row's ``(created_at, id)``. The extra row only signals ``has_more``.
        """
        has_more = len(rows) > limit
        items = list(rows[:limit])
        cursor = None
        if has_more and items:
            created_at, row_id = key(items[-1])
            cursor = encode_cursor(created_at, row_id, filters)
        return cls(items=items, has_more=has_more, next_cursor=cursor)

    def map(self, convert: Callable[[T], Any]) -> Page[Any]:
        """The same page with every item converted (for example to its JSON shape)."""
        return Page(
            items=[convert(i) for i in self.items],
            has_more=self.has_more,
            next_cursor=self.next_cursor,
        )

    def pagination(self) -> dict[str, Any]:
        """The top-level ``pagination`` object of the envelope."""
        return {"has_more": self.has_more, "next_cursor": self.next_cursor}


# SQL pieces for keyset pagination over ``(created_at, id)``. Use with %s placeholders.
KEYSET_BEFORE: Final = "(created_at, id) < (%s, %s)"
ORDER_NEWEST_FIRST: Final = "ORDER BY created_at DESC, id DESC"


def keyset_condition(after: CursorKey | None) -> tuple[str | None, tuple[Any, ...]]:
    """``("(created_at, id) < (%s, %s)", (created_at, id))`` after a cursor, else ``(None, ())``."""
    if after is None:
        return None, ()
    return KEYSET_BEFORE, (after[0], after[1])


@dataclass(frozen=True)
class FilterSpec:
    """How a list filter maps onto SQL: ``<column> <op> %s`` (``op`` from a fixed set)."""

    column: str
    op: str = "="

    def __post_init__(self) -> None:
        if self.op not in ("=", ">=", "<", "<=", ">"):
            raise ValueError(f"unsupported filter operator {self.op!r}")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.column):
            raise ValueError(f"invalid filter column {self.column!r}")


def keyset_select(
    table: str,
    *,
    conditions: Mapping[str, Any],
    filters: Mapping[str, Any],
    specs: Mapping[str, FilterSpec],
    after: CursorKey | None,
    limit: int,
) -> tuple[sql.Composed, list[Any]]:
    """``SELECT * FROM table WHERE … ORDER BY created_at DESC, id DESC LIMIT limit + 1``.

    ``conditions`` are fixed equality scopes (``tenant_id``) taken from the principal;
    ``filters`` are the request's filters, each named in ``specs`` (an unknown name raises
    ``ValueError``; ``None`` values are skipped). Returns the query and its parameters.
    """
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in conditions.items():
        parts.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
        params.append(value)
    for name, value in filters.items():
        if name not in specs:
            raise ValueError(f"unknown filter {name!r}")
        if value is None:
            continue
        spec = specs[name]
        parts.append(sql.SQL("{} " + spec.op + " %s").format(sql.Identifier(spec.column)))
        params.append(value)
    if after is not None:
        parts.append(sql.SQL(KEYSET_BEFORE))
        params.extend(after)
    where = sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")
    query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY created_at DESC, id DESC LIMIT %s").format(
        sql.Identifier(table), where
    )
    params.append(limit + 1)
    return query, params


async def fetch_tenant_page(
    pool: AsyncConnectionPool[Any],
    table: str,
    *,
    tenant_id: str,
    filters: Mapping[str, Any] | None,
    specs: Mapping[str, FilterSpec],
    limit: int,
    cursor: str | None,
) -> Page[dict[str, Any]]:
    """One newest-first page of a tenant's rows of ``table`` as dicts.

    The cursor is bound to the tenant and the non-``None`` filters, so it can neither widen
    the scope nor be replayed under other filters.
    """
    given = {k: v for k, v in (filters or {}).items() if v is not None}
    scope = {"tenant_id": tenant_id, **given}
    after = decode_optional_cursor(cursor, scope)
    query, params = keyset_select(
        table,
        conditions={"tenant_id": tenant_id},
        filters=given,
        specs=specs,
        after=after,
        limit=limit,
    )
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    return Page.from_rows(rows, limit, key=lambda r: (r["created_at"], r["id"]), filters=scope)
