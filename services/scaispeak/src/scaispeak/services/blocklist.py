"""The tenant's text blocklist: entries and the check every synthesis runs (scaispeak.md §12.2).

Matching runs on the text after Unicode NFKC normalisation and whitespace collapsing (every
run of whitespace becomes one space), case-insensitively. ``substring`` entries are a plain
contains test on the case-folded, normalised text and pattern; they run in-process. ``regex``
entries use Python ``re`` syntax (compiled with ``IGNORECASE``, searched in the normalised
text) and run in :mod:`scaispeak.services.regex_sandbox` with a 50 ms limit each; a timeout
counts as a match. Substring entries are tested before regex entries, each oldest first, and
the first hit is reported.

A tenant's entries are cached in this process for :data:`CACHE_TTL_S`; a write through this
process drops the tenant's cache entry at once, other processes see it within the TTL.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection

from scaicommon.adminaudit import Origin
from scaicommon.errors import ScaiError, not_found, validation_error
from scaicommon.ids import new_id
from scaicommon.pagination import Page
from scaicommon.principal import Principal
from scaicommon.ttlcache import TtlLru
from scaispeak.deps import SpeakDeps
from scaispeak.services.regex_sandbox import shared_sandbox
from scaispeak.store.blocklist import (
    MATCH_KINDS,
    BlocklistEntry,
    BlocklistStore,
    NewBlocklistEntry,
)

CACHE_TTL_S: Final = 5.0
MAX_PATTERN_CHARS: Final = 500
MAX_DESCRIPTION_CHARS: Final = 1000
_CACHE_KEY: Final = "scaispeak.blocklist.cache"
_CACHE_TENANTS: Final = 10_000
_WHITESPACE: Final = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, then every run of whitespace collapsed to a single space."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text))


def _fold(text: str) -> str:
    return normalize(text).casefold()


@dataclass(frozen=True)
class Rules:
    """A tenant's entries, ready to match: ``(entry id, pattern)`` pairs, oldest first.

    Substring patterns are normalised and case-folded; regex patterns are as written.
    """

    substrings: tuple[tuple[str, str], ...] = ()
    regexes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, entries: list[BlocklistEntry]) -> Rules:
        """Rules from the stored entries."""
        return cls(
            substrings=tuple((e.id, _fold(e.pattern)) for e in entries if e.match == "substring"),
            regexes=tuple((e.id, e.pattern) for e in entries if e.match == "regex"),
        )

    async def first_hit(self, text: str) -> str | None:
        """The id of the first entry that ``text`` hits, or ``None``."""
        if not self.substrings and not self.regexes:
            return None
        normalized = normalize(text)
        folded = normalized.casefold()
        for entry_id, pattern in self.substrings:
            if pattern in folded:
                return entry_id
        hit = await shared_sandbox().first_hit([p for _, p in self.regexes], normalized)
        return None if hit is None else self.regexes[hit.index][0]


def validate_entry(pattern: object, match: object, description: object) -> None:
    """Check a new entry's fields; ``VALIDATION_ERROR`` naming the first bad field."""
    if not isinstance(pattern, str) or not 1 <= len(pattern) <= MAX_PATTERN_CHARS:
        raise validation_error("pattern", f"must be 1 to {MAX_PATTERN_CHARS} characters")
    if match not in MATCH_KINDS:
        raise validation_error("match", "must be 'substring' or 'regex'")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS
    ):
        raise validation_error(
            "description", f"must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
        )
    if match == "regex":
        try:
            re.compile(pattern, re.IGNORECASE)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise validation_error("pattern", f"is not a valid regular expression: {exc}") from None


def text_blocked(entry_id: str) -> ScaiError:
    """``SCAISPEAK_TEXT_BLOCKED`` (422) naming the entry."""
    return ScaiError(
        "SCAISPEAK_TEXT_BLOCKED",
        "the text matches an entry of the tenant's blocklist",
        blocklist_entry_id=entry_id,
    )


class BlocklistService:
    """Blocklist entries of the caller's tenant, and the check synthesis runs."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._store = BlocklistStore(deps.runtime.pool)
        self._cache: TtlLru[str, Rules] = deps.runtime.cached(
            _CACHE_KEY, lambda: TtlLru[str, Rules](_CACHE_TENANTS)
        )

    async def rules(self, tenant_id: str) -> Rules:
        """The tenant's rules (cached for :data:`CACHE_TTL_S`)."""
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        rules = Rules.of(await self._store.all_for(tenant_id))
        self._cache.put(tenant_id, rules, CACHE_TTL_S)
        return rules

    async def first_match(self, tenant_id: str, text: str) -> str | None:
        """The id of the first entry ``text`` hits, or ``None``."""
        return await (await self.rules(tenant_id)).first_hit(text)

    async def check(self, tenant_id: str, text: str) -> None:
        """Raise 422 ``SCAISPEAK_TEXT_BLOCKED`` (``error.blocklist_entry_id``) on a hit."""
        entry_id = await self.first_match(tenant_id, text)
        if entry_id is not None:
            raise text_blocked(entry_id)

    async def page(
        self, principal: Principal, *, limit: int, cursor: str | None
    ) -> Page[dict[str, Any]]:
        """One page of the caller's tenant's entries, newest first (API shapes)."""
        page = await self._store.page(principal.require_tenant(), limit=limit, cursor=cursor)
        return page.map(BlocklistEntry.to_api)

    async def create(
        self,
        principal: Principal,
        *,
        pattern: object,
        match: object,
        description: object = None,
        origin: Origin | None = None,
    ) -> dict[str, Any]:
        """Validate and store an entry with its ``scaispeak.blocklist.create`` audit row."""
        tenant_id = principal.require_tenant()
        validate_entry(pattern, match, description)
        assert isinstance(pattern, str) and isinstance(match, str)
        new = NewBlocklistEntry(
            id=new_id("blk"),
            tenant_id=tenant_id,
            pattern=pattern,
            match=match,
            description=description if isinstance(description, str) else None,
            created_by=principal.user_id,
            request_id=principal.request_id,
        )
        async with self._deps.runtime.pool.connection() as conn, conn.transaction():
            entry = await self._store.insert(conn, new)
            await self._audit(conn, principal, "create", entry, origin)
        self._cache.pop(tenant_id)
        return entry.to_api()

    async def delete(
        self, principal: Principal, entry_id: str, *, origin: Origin | None = None
    ) -> dict[str, Any]:
        """Delete an entry with its ``scaispeak.blocklist.delete`` audit row.

        Unknown (or another tenant's) → 404 ``SCAISPEAK_BLOCKLIST_ENTRY_NOT_FOUND``.
        """
        tenant_id = principal.require_tenant()
        async with self._deps.runtime.pool.connection() as conn, conn.transaction():
            entry = await self._store.delete(conn, tenant_id, entry_id)
            if entry is None:
                raise not_found("SCAISPEAK_BLOCKLIST_ENTRY_NOT_FOUND", "no such blocklist entry")
            await self._audit(conn, principal, "delete", entry, origin)
        self._cache.pop(tenant_id)
        return {"id": entry.id, "deleted": True}

    async def _audit(
        self,
        conn: AsyncConnection[Any],
        principal: Principal,
        verb: str,
        entry: BlocklistEntry,
        origin: Origin | None,
    ) -> None:
        """The ``scaispeak.blocklist.<verb>`` row, in the transaction of the write."""
        where = origin or Origin()
        await self._deps.audit.write(
            principal,
            conn=conn,
            action=f"scaispeak.blocklist.{verb}",
            status="SUCCESS",
            resource_type="blocklist_entry",
            resource_id=entry.id,
            ip_address=where.ip_address,
            user_agent=where.user_agent,
            details={"match": entry.match, "pattern": entry.pattern},
        )
