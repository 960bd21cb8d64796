"""``voices``: the voice library rows (scaispeak.md §7.1, §8).

Visibility (§1.8) is enforced by the queries that take a caller; the unscoped ones are for
workers and crons.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from scaicommon.errors import validation_error
from scaicommon.pagination import Page, filter_hash
from scaicommon.timefmt import format_ts

SCOPES: Final = ("global", "tenant", "user")
KINDS: Final = ("cloned", "designed", "global")
STATUSES: Final = ("pending", "processing", "ready", "failed", "evicted")
GENDERS: Final = ("female", "male", "neutral", "unspecified")
AGES: Final = ("young", "adult", "middle_aged", "senior", "unspecified")
DEFAULT_KEYS: Final = ("instructions", "speed", "cfg_value", "warmup_trim_ms")


@dataclass(frozen=True)
class Voice:
    """One ``voices`` row."""

    id: str
    scope: str
    kind: str
    tenant_id: str | None
    owner_user_id: str | None
    display_name: str
    description: str | None
    embedding_status: str
    embedding_status_reason: str | None
    language_primary: str
    language_supported: list[str]
    gender_hint: str
    age_hint: str
    style_tags: list[str]
    defaults: dict[str, Any]
    license: dict[str, Any] | None
    license_chars_used: int
    relay_voice: str | None
    voice_design_prompt: str | None
    preflight: dict[str, Any] | None
    reference_key: str | None
    reference_sha256: str | None
    reference_text: str | None
    consent_id: str | None
    request_id: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    deleted_by: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Voice:
        """A voice from a ``dict_row``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def deleted(self) -> bool:
        """Tombstoned by an erasure."""
        return self.deleted_at is not None

    @property
    def ready(self) -> bool:
        """Usable for synthesis."""
        return self.embedding_status == "ready" and not self.deleted

    @property
    def needs_reference(self) -> bool:
        """Synthesis sends the stored reference clip (cloned, designed, global with a clip)."""
        return self.reference_key is not None

    def merged_defaults(self) -> dict[str, Any]:
        """Every default key, ``None`` where the engine default applies."""
        return {key: self.defaults.get(key) for key in DEFAULT_KEYS}

    def license_view(self) -> dict[str, Any] | None:
        """The ``license`` object of §7.1 (global voices only)."""
        if self.scope != "global" or self.license is None:
            return None
        return {
            "licensor_name": self.license.get("licensor_name"),
            "license_type": self.license.get("license_type"),
            "license_expires_at": self.license.get("license_expires_at"),
            "license_char_cap": self.license.get("license_char_cap"),
            "license_chars_used": self.license_chars_used,
        }

    def to_api(self) -> dict[str, Any]:
        """The voice record of §7.1."""
        is_global = self.scope == "global"
        return {
            "voice_id": self.id,
            "display_name": self.display_name,
            "description": self.description,
            "scope": self.scope,
            "kind": self.kind,
            "owner_user_id": None if is_global else self.owner_user_id,
            "tenant_id": None if is_global else self.tenant_id,
            "embedding_status": self.embedding_status,
            "embedding_status_reason": (
                None if self.embedding_status == "ready" else self.embedding_status_reason
            ),
            "language_primary": self.language_primary,
            "language_supported": list(self.language_supported),
            "gender_hint": self.gender_hint,
            "age_hint": self.age_hint,
            "style_tags": list(self.style_tags),
            "defaults": self.merged_defaults(),
            "license": self.license_view(),
            "relay_voice": self.relay_voice if is_global else None,
            "voice_design_prompt": self.voice_design_prompt if self.kind == "designed" else None,
            "preflight": self.preflight,
            "created_at": format_ts(self.created_at),
            "updated_at": format_ts(self.updated_at),
        }


@dataclass(frozen=True)
class NewVoice:
    """What a new voice row starts with."""

    id: str
    scope: str
    kind: str
    tenant_id: str | None
    owner_user_id: str | None
    display_name: str
    language_primary: str
    request_id: str
    embedding_status: str = "ready"
    embedding_status_reason: str | None = None
    description: str | None = None
    language_supported: Sequence[str] = ()
    gender_hint: str = "unspecified"
    age_hint: str = "unspecified"
    style_tags: Sequence[str] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    license: Mapping[str, Any] | None = None
    relay_voice: str | None = None
    voice_design_prompt: str | None = None
    preflight: Mapping[str, Any] | None = None
    reference_key: str | None = None
    reference_sha256: str | None = None
    reference_text: str | None = None
    consent_id: str | None = None


_INSERT_COLUMNS: Final = (
    "id", "scope", "kind", "tenant_id", "owner_user_id", "display_name", "language_primary",
    "request_id", "embedding_status", "embedding_status_reason", "description",
    "language_supported", "gender_hint", "age_hint", "style_tags", "defaults", "license",
    "relay_voice", "voice_design_prompt", "preflight", "reference_key", "reference_sha256",
    "reference_text", "consent_id",
)  # fmt: skip
_JSON_COLUMNS: Final = frozenset({"defaults", "license", "preflight"})
#: Columns :meth:`VoiceStore.update` may change (PATCH, §7.7).
UPDATABLE: Final = frozenset(
    {
        "display_name",
        "description",
        "language_primary",
        "language_supported",
        "gender_hint",
        "age_hint",
        "style_tags",
        "defaults",
        "license",
        "relay_voice",
    }
)
#: Ranking groups of §7.2: the caller's user voices, then tenant voices, then global voices.
SCOPE_RANK: Final = {"user": 0, "tenant": 1, "global": 2}
_RANK_SQL: Final = "CASE scope WHEN 'user' THEN 0 WHEN 'tenant' THEN 1 ELSE 2 END"
# Byte order of the lower-cased name: the same in SQL and in the cursor, whatever the
# database's default collation.
_NAME_SQL: Final = 'lower(display_name) COLLATE "C"'
_VISIBLE_SQL: Final = (
    "((scope = 'user' AND tenant_id = %(tenant_id)s AND owner_user_id = %(user_id)s)"
    " OR (scope = 'tenant' AND tenant_id = %(tenant_id)s) OR scope = 'global')"
)
_CURSOR_VERSION: Final = 1
_MAX_CURSOR_CHARS: Final = 2048

OptConn = psycopg.AsyncConnection[Any] | None
Query = str | sql.Composed


@dataclass(frozen=True)
class VoiceFilters:
    """The filters of ``GET /voices`` (§7.2), already validated; ``None`` = not filtered."""

    language: str | None = None
    scope: str | None = None
    gender: str | None = None
    embedding_status: str | None = None
    q: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The filters by query name (for the cursor binding)."""
        return {
            "language": self.language,
            "scope": self.scope,
            "gender": self.gender,
            "embedding_status": self.embedding_status,
            "q": self.q,
        }


@dataclass(frozen=True)
class RankKey:
    """A voice's position in the §7.2 ranking: group, lower-cased name, id."""

    group: int
    name: str
    voice_id: str


def _rank_key(row: Mapping[str, Any]) -> RankKey:
    return RankKey(int(row["rank_group"]), str(row["rank_name"]), str(row["id"]))


def _cursor_binding(tenant_id: str, user_id: str, filters: VoiceFilters) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "user_id": user_id, **filters.as_dict()}


def encode_rank_cursor(key: RankKey, binding: Mapping[str, Any]) -> str:
    """Opaque cursor continuing after ``key``, bound to the caller and filters of ``binding``.

    base64url (no padding) of ``{"v":1,"k":[group, name, voice_id],"f":"<8 hex>"}``, ``f``
    being :func:`scaicommon.pagination.filter_hash` of the binding.
    """
    body = {
        "v": _CURSOR_VERSION,
        "k": [key.group, key.name, key.voice_id],
        "f": filter_hash(binding),
    }
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_rank_cursor(raw: str, binding: Mapping[str, Any]) -> RankKey:
    """The position in a cursor made for the same binding; 422 on field ``cursor`` otherwise."""
    text = raw.strip()
    if not text or len(text) > _MAX_CURSOR_CHARS:
        raise validation_error("cursor", "not a cursor returned by this list")
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        body = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise validation_error("cursor", "not a cursor returned by this list") from None
    key = body.get("k") if isinstance(body, dict) else None
    if not (
        isinstance(body, dict)
        and body.get("v") == _CURSOR_VERSION
        and isinstance(key, list)
        and len(key) == 3
        and type(key[0]) is int
        and key[0] in SCOPE_RANK.values()
        and isinstance(key[1], str)
        and isinstance(key[2], str)
        and key[2]
        and isinstance(body.get("f"), str)
    ):
        raise validation_error("cursor", "not a cursor returned by this list")
    if body["f"] != filter_hash(binding):
        raise validation_error("cursor", "the cursor was issued for different filters")
    return RankKey(key[0], key[1], key[2])


def _value(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        return None if value is None else Jsonb(dict(value))
    if column in ("language_supported", "style_tags"):
        return list(value)
    return value


class VoiceStore:
    """Repository of ``voices``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The connection pool (for queries that other modules add)."""
        return self._pool

    async def fetch_one(
        self, query: Query, params: Sequence[Any] | Mapping[str, Any], *, conn: OptConn = None
    ) -> Voice | None:
        """One voice from ``query`` (``SELECT *``/``RETURNING *``), or ``None``.

        ``conn`` runs it inside the caller's transaction.
        """
        rows = await self._rows(query, params, conn)
        return Voice.from_row(rows[0]) if rows else None

    async def fetch_all(
        self, query: Query, params: Sequence[Any] | Mapping[str, Any], *, conn: OptConn = None
    ) -> list[Voice]:
        """Every voice ``query`` returns."""
        return [Voice.from_row(r) for r in await self._rows(query, params, conn)]

    async def _rows(
        self, query: Query, params: Sequence[Any] | Mapping[str, Any], conn: OptConn
    ) -> list[dict[str, Any]]:
        if conn is not None:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, params)
                return list(await cur.fetchall()) if cur.description else []
        async with self._pool.connection() as own, own.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return list(await cur.fetchall()) if cur.description else []

    async def insert(self, voice: NewVoice, *, conn: OptConn = None) -> Voice:
        """Insert a new voice and return the row (a duplicate global name raises
        ``psycopg.errors.UniqueViolation``)."""
        placeholders = ", ".join(["%s"] * len(_INSERT_COLUMNS))
        query = (
            f"INSERT INTO voices ({', '.join(_INSERT_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
            " RETURNING *"
        )
        values = [_value(c, getattr(voice, c)) for c in _INSERT_COLUMNS]
        row = await self.fetch_one(query, values, conn=conn)
        assert row is not None
        return row

    async def get(self, voice_id: str) -> Voice | None:
        """A voice by id, tombstoned ones included (no visibility check)."""
        return await self.fetch_one("SELECT * FROM voices WHERE id = %s", (voice_id,))

    async def set_status(
        self,
        voice_id: str,
        status: str,
        reason: str | None = None,
        *,
        preflight: Mapping[str, Any] | None = None,
    ) -> Voice | None:
        """Move a live voice to ``status`` (with ``reason``; and new preflight metrics)."""
        return await self.fetch_one(
            "UPDATE voices SET embedding_status = %s, embedding_status_reason = %s,"
            " preflight = COALESCE(%s, preflight), updated_at = now()"
            " WHERE id = %s AND deleted_at IS NULL RETURNING *",
            (status, reason, None if preflight is None else Jsonb(dict(preflight)), voice_id),
        )

    # ----- visibility-scoped reads (§1.8) ----------------------------------------------

    async def get_visible(
        self, tenant_id: str, user_id: str, voice_id: str, *, include_deleted: bool = False
    ) -> Voice | None:
        """The voice if the caller may see it (tombstoned ones only with ``include_deleted``)."""
        deleted = "" if include_deleted else " AND deleted_at IS NULL"
        return await self.fetch_one(
            f"SELECT * FROM voices WHERE id = %(voice_id)s AND {_VISIBLE_SQL}{deleted}",  # noqa: S608
            {"voice_id": voice_id, "tenant_id": tenant_id, "user_id": user_id},
        )

    async def list_visible(
        self,
        tenant_id: str,
        user_id: str,
        filters: VoiceFilters,
        *,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Voice]:
        """One page of the §7.2 ranking of every live voice the caller can see.

        The cursor is bound to the caller and to ``filters``; a foreign or corrupt one is a
        ``VALIDATION_ERROR`` on ``cursor``.
        """
        binding = _cursor_binding(tenant_id, user_id, filters)
        after = None if cursor is None else decode_rank_cursor(cursor, binding)
        params: dict[str, Any] = {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "limit": limit + 1,
        }
        where = [_VISIBLE_SQL, "deleted_at IS NULL"]
        if filters.language is not None:
            where.append(
                "(language_primary = %(language)s OR %(language)s = ANY(language_supported))"
            )
            params["language"] = filters.language
        if filters.scope is not None:
            where.append("scope = %(scope)s")
            params["scope"] = filters.scope
        if filters.gender is not None:
            where.append("gender_hint = %(gender)s")
            params["gender"] = filters.gender
        if filters.embedding_status is not None:
            where.append("embedding_status = %(status)s")
            params["status"] = filters.embedding_status
        if filters.q is not None:
            where.append(
                "(strpos(lower(display_name), lower(%(q)s)) > 0"
                " OR strpos(lower(coalesce(description, '')), lower(%(q)s)) > 0"
                " OR EXISTS (SELECT 1 FROM unnest(style_tags) AS tag"
                " WHERE strpos(lower(tag), lower(%(q)s)) > 0))"
            )
            params["q"] = filters.q
        position = ""
        if after is not None:
            position = (
                ' WHERE (rank_group, rank_name COLLATE "C", id COLLATE "C")'
                " > (%(a_group)s, %(a_name)s, %(a_id)s)"
            )
            params.update(a_group=after.group, a_name=after.name, a_id=after.voice_id)
        query = (
            f"SELECT * FROM (SELECT *, {_RANK_SQL} AS rank_group, {_NAME_SQL} AS rank_name"  # noqa: S608
            f" FROM voices WHERE {' AND '.join(where)}) AS ranked{position}"
            ' ORDER BY rank_group, rank_name COLLATE "C", id COLLATE "C" LIMIT %(limit)s'
        )
        rows = await self._rows(query, params, None)
        has_more = len(rows) > limit
        page_rows = rows[:limit]
        next_cursor = (
            encode_rank_cursor(_rank_key(page_rows[-1]), binding)
            if has_more and page_rows
            else None
        )
        return Page(
            items=[Voice.from_row(r) for r in page_rows],
            has_more=has_more,
            next_cursor=next_cursor,
        )

    async def find_global_by_name(self, name: str) -> Voice | None:
        """The live global voice whose ``display_name`` equals ``name`` case-insensitively."""
        return await self.fetch_one(
            "SELECT * FROM voices WHERE scope = 'global' AND deleted_at IS NULL"
            " AND lower(display_name) = lower(%s)",
            (name,),
        )

    # ----- writes -------------------------------------------------------------------------

    async def update(
        self, voice_id: str, changes: Mapping[str, Any], *, conn: OptConn = None
    ) -> Voice | None:
        """Apply ``changes`` (columns of :data:`UPDATABLE`) to a live voice; ``None`` if gone.

        A duplicate global name raises ``psycopg.errors.UniqueViolation``.
        """
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if not changes:
            return await self.fetch_one(
                "SELECT * FROM voices WHERE id = %s AND deleted_at IS NULL", (voice_id,), conn=conn
            )
        names = list(changes)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(name)) for name in names
        )
        query = sql.SQL(
            "UPDATE voices SET {}, updated_at = now() WHERE id = %s AND deleted_at IS NULL"
            " RETURNING *"
        ).format(assignments)
        params = [_value(name, changes[name]) for name in names] + [voice_id]
        return await self.fetch_one(query, params, conn=conn)

    async def share(
        self, voice_id: str, owner_user_id: str, *, conn: OptConn = None
    ) -> Voice | None:
        """Move the owner's live ``user`` voice to ``tenant`` scope (§7.12); ``None`` otherwise."""
        return await self.fetch_one(
            "UPDATE voices SET scope = 'tenant', updated_at = now() WHERE id = %s"
            " AND scope = 'user' AND owner_user_id = %s AND deleted_at IS NULL RETURNING *",
            (voice_id, owner_user_id),
            conn=conn,
        )

    async def tombstone(
        self, voice_id: str, deleted_by: str, *, conn: OptConn = None
    ) -> Voice | None:
        """Tombstone a live voice (§7.8 step 1); ``None`` when it is already gone."""
        return await self.fetch_one(
            "UPDATE voices SET deleted_at = now(), deleted_by = %s, updated_at = now()"
            " WHERE id = %s AND deleted_at IS NULL RETURNING *",
            (deleted_by, voice_id),
            conn=conn,
        )

    async def add_license_chars(self, voice_id: str, chars: int) -> None:
        """Atomically add ``chars`` to a global voice's ``license_chars_used`` (§12.3)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE voices SET license_chars_used = license_chars_used + %s"
                " WHERE id = %s AND scope = 'global'",
                (chars, voice_id),
            )
