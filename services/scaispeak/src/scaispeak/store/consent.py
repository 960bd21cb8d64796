"""``consent_records``: the recorded consent behind each cloned voice (scaispeak.md §7.4).

A row is immutable except for the one redaction an erasure performs (a trigger enforces it):
the personal fields and the audio key are cleared, the hashes stay.

The hashes bind the recording to the exact statement read in it:

- ``consent_audio_sha256`` = lower-case hex SHA-256 of the consent audio bytes as uploaded;
- ``consent_text_sha256`` = lower-case hex SHA-256 of the UTF-8 encoding of ``consent_text``
  after Unicode NFC normalisation and trimming of leading and trailing whitespace (in that
  order), see :func:`normalise_consent_text`;
- ``combined_sha256`` = lower-case hex SHA-256 of the ASCII string
  ``"<consent_audio_sha256>:<consent_text_sha256>"`` (the two hex digests joined by one colon),
  see :func:`combined_sha256`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

Connection = psycopg.AsyncConnection[Any]

_COLUMNS: Final = (
    "id", "voice_id", "tenant_id", "created_by", "consent_user_full_name", "consent_text",
    "consent_stated_purpose", "consent_audio_key", "consent_audio_sha256", "consent_text_sha256",
    "combined_sha256", "request_id",
)  # fmt: skip


def normalise_consent_text(text: str) -> str:
    """``text`` in Unicode NFC with leading and trailing whitespace removed."""
    return unicodedata.normalize("NFC", text).strip()


def consent_text_sha256(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of :func:`normalise_consent_text` of ``text``."""
    return hashlib.sha256(normalise_consent_text(text).encode("utf-8")).hexdigest()


def combined_sha256(audio_sha256: str, text_sha256: str) -> str:
    """Hex SHA-256 of ``"<audio_sha256>:<text_sha256>"`` (ASCII; both lower-case hex)."""
    joined = f"{audio_sha256.lower()}:{text_sha256.lower()}"
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class NewConsent:
    """What a consent record is made from; the hashes are derived by :meth:`hashes`."""

    id: str
    voice_id: str
    tenant_id: str
    created_by: str
    consent_user_full_name: str
    consent_text: str
    consent_stated_purpose: str
    consent_audio_key: str
    consent_audio_sha256: str
    request_id: str

    def hashes(self) -> tuple[str, str]:
        """``(consent_text_sha256, combined_sha256)``."""
        text_hash = consent_text_sha256(self.consent_text)
        return text_hash, combined_sha256(self.consent_audio_sha256, text_hash)


@dataclass(frozen=True)
class ConsentRecord:
    """One ``consent_records`` row."""

    id: str
    voice_id: str
    tenant_id: str
    created_by: str
    consent_user_full_name: str | None
    consent_text: str | None
    consent_stated_purpose: str | None
    consent_audio_key: str | None
    consent_audio_sha256: str
    consent_text_sha256: str
    combined_sha256: str
    request_id: str
    created_at: datetime
    redacted_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ConsentRecord:
        """A record from a ``dict_row``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


class ConsentStore:
    """Repository of ``consent_records``."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def insert(self, consent: NewConsent, *, conn: Connection | None = None) -> ConsentRecord:
        """Insert a record (text stored normalised, hashes derived); pass ``conn`` to join a
        transaction."""
        text_hash, combined = consent.hashes()
        values = {
            "id": consent.id,
            "voice_id": consent.voice_id,
            "tenant_id": consent.tenant_id,
            "created_by": consent.created_by,
            "consent_user_full_name": consent.consent_user_full_name,
            "consent_text": normalise_consent_text(consent.consent_text),
            "consent_stated_purpose": consent.consent_stated_purpose,
            "consent_audio_key": consent.consent_audio_key,
            "consent_audio_sha256": consent.consent_audio_sha256.lower(),
            "consent_text_sha256": text_hash,
            "combined_sha256": combined,
            "request_id": consent.request_id,
        }
        query = (
            f"INSERT INTO consent_records ({', '.join(_COLUMNS)})"  # noqa: S608
            f" VALUES ({', '.join(['%s'] * len(_COLUMNS))}) RETURNING *"
        )
        params = [values[c] for c in _COLUMNS]
        if conn is not None:
            return await self._insert(conn, query, params)
        async with self._pool.connection() as own:
            return await self._insert(own, query, params)

    @staticmethod
    async def _insert(conn: Connection, query: str, params: list[Any]) -> ConsentRecord:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        assert row is not None
        return ConsentRecord.from_row(row)
