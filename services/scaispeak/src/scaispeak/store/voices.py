"""``voices``: the voice library rows (scaispeak.md §7.1, §8).

Visibility (§1.8) is enforced by the queries that take a caller; the unscoped ones are for
workers and crons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

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

    async def fetch_one(self, query: str, params: Sequence[Any]) -> Voice | None:
        """One voice from ``query`` (``SELECT *``/``RETURNING *``), or ``None``."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        return Voice.from_row(row) if row else None

    async def fetch_all(self, query: str, params: Sequence[Any]) -> list[Voice]:
        """Every voice ``query`` returns."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [Voice.from_row(r) for r in rows]

    async def insert(self, voice: NewVoice) -> Voice:
        """Insert a new voice and return the row."""
        placeholders = ", ".join(["%s"] * len(_INSERT_COLUMNS))
        query = (
            f"INSERT INTO voices ({', '.join(_INSERT_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
            " RETURNING *"
        )
        row = await self.fetch_one(query, [_value(c, getattr(voice, c)) for c in _INSERT_COLUMNS])
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
