"""The voice library: visibility, licences, listing, PATCH, share, warm and global voices.

scaispeak.md §1.8, §7.1–7.3, §7.7, §7.11, §7.12, §12.3. Visibility: global voices are visible
to everyone, tenant voices to their tenant, user voices to their owner only; administrators are
bound too. A voice the caller may not see is a 404 ``SCAISPEAK_VOICE_NOT_FOUND``; a 403
``SCAISPEAK_VOICE_NOT_OWNER`` only ever concerns a visible voice.

Global voices belong to no tenant. Where a tenant id is needed for them (the warm registry, the
node cache key of ``EvictVoice``, erasure audit rows) the pseudo-tenant :data:`GLOBAL_TENANT`
stands in (:func:`cache_tenant`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import psycopg
import structlog
from msgspec import UNSET, UnsetType
from psycopg import AsyncConnection

from scaicommon.adminaudit import Origin
from scaicommon.bodies import RequestBody
from scaicommon.errors import ScaiError, service_unavailable
from scaicommon.ids import new_id
from scaicommon.nodes import RegistryUnreadable
from scaicommon.pagination import Page
from scaicommon.principal import Principal
from scaicommon.requestid import current_request_id
from scaicommon.timefmt import format_ts, parse_ts, utcnow
from scaicommon.uploads import UploadedFile
from scaicommon.warm import WarmRegistry
from scaispeak.deps import SpeakDeps
from scaispeak.permissions import ADMIN
from scaispeak.store.voices import (
    AGES,
    DEFAULT_KEYS,
    GENDERS,
    SCOPES,
    STATUSES,
    NewVoice,
    Voice,
    VoiceFilters,
)

log = structlog.get_logger("scaispeak.voices")

GLOBAL_TENANT: Final = "global"
WARM_KIND: Final = "voice"
WARM_NOTE: Final = "Warming is not needed on the current engine; the voice is usable now."
LICENSE_TYPES: Final = ("perpetual", "term", "usage")
LICENSE_KEYS: Final = ("licensor_name", "license_type", "license_expires_at", "license_char_cap")
MAX_STYLE_TAGS: Final = 20
MAX_TAG_CHARS: Final = 32
MAX_NAME_CHARS: Final = 100
MAX_DESCRIPTION_CHARS: Final = 1000
MAX_LANGUAGES: Final = 50
MAX_QUERY_CHARS: Final = 200
MAX_INSTRUCTIONS_CHARS: Final = 1000
MAX_LICENSOR_CHARS: Final = 200
MAX_RELAY_VOICE_CHARS: Final = 200
_LANGUAGE_RE: Final = re.compile(r"^[a-z]{2}$")
#: Numeric ``defaults`` members and their ranges (§4.1): ``(low, high, integer only)``.
_DEFAULT_RANGES: Final = {
    "speed": (0.5, 2.0, False),
    "cfg_value": (0.5, 5.0, False),
    "warmup_trim_ms": (0, 2000, True),
}

Details = list[dict[str, str]]


# ----- errors and small helpers ------------------------------------------------------------


def voice_not_found() -> ScaiError:
    """404 ``SCAISPEAK_VOICE_NOT_FOUND`` (missing, deleted or not visible)."""
    return ScaiError("SCAISPEAK_VOICE_NOT_FOUND", "voice not found")


def not_owner(message: str = "you may not modify this voice") -> ScaiError:
    """403 ``SCAISPEAK_VOICE_NOT_OWNER``."""
    return ScaiError("SCAISPEAK_VOICE_NOT_OWNER", message)


def invalid(details: Details) -> ScaiError:
    """422 ``VALIDATION_ERROR`` naming every broken field."""
    first = details[0]
    return ScaiError(
        "VALIDATION_ERROR", f"{first['field']}: {first['message']}", details=list(details)
    )


def cache_tenant(voice: Voice) -> str:
    """The tenant a voice's node caches, warm entries and erasure rows are keyed under."""
    return voice.tenant_id or GLOBAL_TENANT


def caller_tenant(principal: Principal) -> str:
    """The tenant whose voices the caller sees (422 on ``X-Tenant-ID`` when it has none)."""
    return principal.require_tenant()


def is_voice_admin(principal: Principal) -> bool:
    """Whether the caller holds ``scaispeak:admin`` (may modify the tenant's tenant voices)."""
    return principal.has(ADMIN)


def may_modify(principal: Principal, voice: Voice) -> bool:
    """The §7.7 rule for a voice the caller can see (user voices are visible to owners only)."""
    if voice.scope == "global":
        return principal.is_super_admin
    if voice.owner_user_id == principal.user_id:
        return True
    return voice.scope == "tenant" and is_voice_admin(principal)


async def audit_voice(
    deps: SpeakDeps,
    principal: Principal,
    action: str,
    voice_id: str,
    origin: Origin | None,
    *,
    conn: AsyncConnection[Any] | None = None,
    http_status: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """The ``SUCCESS`` audit row of a voice action (in ``conn``'s transaction when given)."""
    where = origin or Origin()
    await deps.audit.write(
        principal,
        conn=conn,
        action=action,
        status="SUCCESS",
        resource_type="voice",
        resource_id=voice_id,
        http_status=http_status,
        ip_address=where.ip_address,
        user_agent=where.user_agent,
        details=details,
    )


# ----- field validation (§7.1, §7.4, §12.3) ------------------------------------------------


def _text(
    details: Details, field: str, value: object, *, low: int, high: int, strip: bool = True
) -> str | None:
    if not isinstance(value, str):
        details.append({"field": field, "message": "must be a string"})
        return None
    text = value.strip() if strip else value
    if not low <= len(text) <= high:
        details.append({"field": field, "message": f"must be {low}-{high} characters"})
        return None
    return text


def check_display_name(details: Details, value: object, field: str = "display_name") -> str | None:
    """1–100 characters after trimming."""
    return _text(details, field, value, low=1, high=MAX_NAME_CHARS)


def check_description(details: Details, value: object) -> str | None:
    """At most 1000 characters; empty means no description."""
    if value is None:
        return None
    text = _text(details, "description", value, low=0, high=MAX_DESCRIPTION_CHARS)
    return text or None


def check_language(details: Details, value: object, field: str) -> str | None:
    """An ISO 639-1 code (two lower-case letters)."""
    if not isinstance(value, str) or not _LANGUAGE_RE.match(value):
        details.append({"field": field, "message": "must be an ISO 639-1 code such as 'en'"})
        return None
    return value


def check_languages(details: Details, value: object, field: str) -> list[str] | None:
    """A JSON array of ISO 639-1 codes (duplicates dropped, order kept)."""
    if not isinstance(value, list):
        details.append({"field": field, "message": "must be an array of ISO 639-1 codes"})
        return None
    if len(value) > MAX_LANGUAGES:
        details.append({"field": field, "message": f"at most {MAX_LANGUAGES} languages"})
        return None
    out: list[str] = []
    for index, item in enumerate(value):
        code = check_language(details, item, f"{field}[{index}]")
        if code is not None and code not in out:
            out.append(code)
    return out


def with_primary(primary: str, supported: Sequence[str]) -> list[str]:
    """``language_supported`` with ``language_primary`` always present (first when added)."""
    rest = [code for code in supported if code != primary]
    return [primary, *rest]


def check_enum(details: Details, value: object, field: str, allowed: Sequence[str]) -> str | None:
    """One of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        details.append({"field": field, "message": f"must be one of {', '.join(allowed)}"})
        return None
    return value


def check_style_tags(
    details: Details, value: object, field: str = "style_tags"
) -> list[str] | None:
    """Up to 20 tags of 1–32 characters each (trimmed; duplicates dropped)."""
    if not isinstance(value, list):
        details.append({"field": field, "message": "must be an array of strings"})
        return None
    if len(value) > MAX_STYLE_TAGS:
        details.append({"field": field, "message": f"at most {MAX_STYLE_TAGS} tags"})
        return None
    out: list[str] = []
    for index, item in enumerate(value):
        tag = _text(details, f"{field}[{index}]", item, low=1, high=MAX_TAG_CHARS)
        if tag is not None and tag not in out:
            out.append(tag)
    return out


def check_defaults(
    details: Details, value: object, current: Mapping[str, Any], field: str = "defaults"
) -> dict[str, Any] | None:
    """Merge a ``defaults`` object into ``current``; a ``null`` member resets that key."""
    if not isinstance(value, dict):
        details.append({"field": field, "message": "must be an object"})
        return None
    merged = {k: v for k, v in current.items() if k in DEFAULT_KEYS and v is not None}
    for key, member in value.items():
        path = f"{field}.{key}"
        if key not in DEFAULT_KEYS:
            details.append(
                {"field": path, "message": f"unknown; allowed: {', '.join(DEFAULT_KEYS)}"}
            )
            continue
        if member is None:
            merged.pop(key, None)
            continue
        if key == "instructions":
            text = _text(details, path, member, low=1, high=MAX_INSTRUCTIONS_CHARS, strip=False)
            if text is not None:
                merged[key] = text
            continue
        low, high, integer = _DEFAULT_RANGES[key]
        is_number = isinstance(member, int | float) and not isinstance(member, bool)
        if not is_number or (integer and not isinstance(member, int)):
            kind = "an integer" if integer else "a number"
            details.append({"field": path, "message": f"must be {kind}"})
        elif not low <= member <= high:
            details.append({"field": path, "message": f"must be between {low} and {high}"})
        else:
            merged[key] = member
    return merged


def _expiry(details: Details, value: object, field: str) -> str | None:
    if not isinstance(value, str):
        details.append({"field": field, "message": "must be an RFC 3339 timestamp"})
        return None
    try:
        return format_ts(parse_ts(value))
    except ValueError:
        details.append({"field": field, "message": "must be an RFC 3339 timestamp with an offset"})
        return None


def check_license(details: Details, value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validate a complete licence (§12.3) and return it normalised.

    ``licensor_name`` and ``license_type`` are required; ``term`` needs
    ``license_expires_at``; ``usage`` needs ``license_char_cap``; a ``perpetual`` licence has
    no expiry. ``prefix`` is prepended to field names (``license.`` for PATCH).
    """
    out: dict[str, Any] = {}
    name = value.get("licensor_name")
    if name is None:
        details.append({"field": f"{prefix}licensor_name", "message": "required"})
    else:
        out["licensor_name"] = _text(
            details, f"{prefix}licensor_name", name, low=1, high=MAX_LICENSOR_CHARS
        )
    kind = value.get("license_type")
    if kind is None:
        details.append({"field": f"{prefix}license_type", "message": "required"})
    else:
        out["license_type"] = check_enum(details, kind, f"{prefix}license_type", LICENSE_TYPES)
    expires = value.get("license_expires_at")
    out["license_expires_at"] = (
        None if expires is None else _expiry(details, expires, f"{prefix}license_expires_at")
    )
    cap = value.get("license_char_cap")
    out["license_char_cap"] = None
    if cap is not None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            details.append(
                {"field": f"{prefix}license_char_cap", "message": "must be a positive integer"}
            )
        else:
            out["license_char_cap"] = cap
    if kind == "term" and expires is None:
        details.append(
            {"field": f"{prefix}license_expires_at", "message": "required for a term licence"}
        )
    if kind == "usage" and cap is None:
        details.append(
            {"field": f"{prefix}license_char_cap", "message": "required for a usage licence"}
        )
    if kind == "perpetual" and expires is not None:
        details.append(
            {
                "field": f"{prefix}license_expires_at",
                "message": "a perpetual licence does not expire",
            }
        )
    return out


def check_relay_voice(details: Details, value: object, field: str = "relay_voice") -> str | None:
    """The relay's voice name: 1–200 characters."""
    return _text(details, field, value, low=1, high=MAX_RELAY_VOICE_CHARS)


def parse_filters(query: Mapping[str, str]) -> VoiceFilters:
    """The filters of ``GET /voices`` (§7.2); 422 naming every bad one."""
    details: Details = []
    language = query.get("language")
    if language is not None:
        language = check_language(details, language, "language")
    scope = query.get("scope")
    if scope is not None:
        scope = check_enum(details, scope, "scope", SCOPES)
    gender = query.get("gender")
    if gender is not None:
        gender = check_enum(details, gender, "gender", GENDERS)
    status = query.get("embedding_status")
    if status is not None:
        status = check_enum(details, status, "embedding_status", STATUSES)
    q = query.get("q")
    if q is not None:
        q = _text(details, "q", q, low=1, high=MAX_QUERY_CHARS, strip=False)
    if details:
        raise invalid(details)
    return VoiceFilters(language=language, scope=scope, gender=gender, embedding_status=status, q=q)


# ----- request bodies --------------------------------------------------------------------


class VoicePatch(RequestBody):
    """``PATCH /voices/{voice_id}`` (§7.7): every field optional; unknown fields are 422."""

    display_name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    language_primary: str | UnsetType = UNSET
    language_supported: list[str] | UnsetType = UNSET
    gender_hint: str | UnsetType = UNSET
    age_hint: str | UnsetType = UNSET
    style_tags: list[str] | UnsetType = UNSET
    defaults: dict[str, Any] | UnsetType = UNSET
    license: dict[str, Any] | UnsetType = UNSET
    relay_voice: str | UnsetType | None = UNSET


@dataclass(frozen=True)
class GlobalVoiceInput:
    """A validated ``POST /admin/voices/global`` form (§12.3); ``reference`` is a file path."""

    display_name: str
    language_primary: str
    language_supported: list[str]
    gender_hint: str
    age_hint: str
    style_tags: list[str]
    description: str | None
    defaults: dict[str, Any]
    license: dict[str, Any]
    relay_voice: str | None
    reference: UploadedFile | None


def _json_field(details: Details, fields: Mapping[str, str], name: str) -> object:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw.encode("utf-8"))
    except msgspec.DecodeError:
        details.append({"field": name, "message": "must be valid JSON"})
        return None


def parse_global_form(
    fields: Mapping[str, str], reference: UploadedFile | None
) -> GlobalVoiceInput:
    """Validate the text fields of a global-voice import; 422 naming every broken field."""
    details: Details = []
    name = check_display_name(details, fields.get("display_name", ""))
    primary = check_language(details, fields.get("language_primary", ""), "language_primary")
    supported_raw = _json_field(details, fields, "language_supported_json")
    supported: list[str] = []
    if supported_raw is not None:
        supported = check_languages(details, supported_raw, "language_supported_json") or []
    gender = check_enum(details, fields.get("gender_hint", "unspecified"), "gender_hint", GENDERS)
    age = check_enum(details, fields.get("age_hint", "unspecified"), "age_hint", AGES)
    tags_raw = _json_field(details, fields, "style_tags_json")
    tags = [] if tags_raw is None else check_style_tags(details, tags_raw, "style_tags_json")
    description = check_description(details, fields.get("description"))
    defaults_raw = _json_field(details, fields, "defaults_json")
    defaults: dict[str, Any] | None = {}
    if defaults_raw is not None:
        defaults = check_defaults(details, defaults_raw, {}, "defaults_json")
    cap_raw = fields.get("license_char_cap")
    cap: object = cap_raw
    if cap_raw is not None:
        cap = int(cap_raw.strip()) if re.fullmatch(r"\s*[0-9]{1,15}\s*", cap_raw) else cap_raw
    license = check_license(
        details,
        {
            "licensor_name": fields.get("licensor_name"),
            "license_type": fields.get("license_type"),
            "license_expires_at": fields.get("license_expires_at") or None,
            "license_char_cap": cap,
        },
    )
    relay_voice = None
    if fields.get("relay_voice") is not None:
        relay_voice = check_relay_voice(details, fields["relay_voice"])
    if reference is None and fields.get("relay_voice") is None:
        details.append(
            {"field": "reference", "message": "give a reference clip, a relay_voice or both"}
        )
    if details or name is None or primary is None or gender is None or age is None:
        raise invalid(details or [{"field": "body", "message": "invalid"}])
    return GlobalVoiceInput(
        display_name=name,
        language_primary=primary,
        language_supported=with_primary(primary, supported),
        gender_hint=gender,
        age_hint=age,
        style_tags=list(tags or []),
        description=description,
        defaults=dict(defaults or {}),
        license=license,
        relay_voice=relay_voice,
        reference=reference,
    )


def name_conflict(name: str) -> ScaiError:
    """409 ``SCAISPEAK_VOICE_NAME_CONFLICT``."""
    return ScaiError(
        "SCAISPEAK_VOICE_NAME_CONFLICT", f"a global voice named {name!r} already exists"
    )


# ----- the service --------------------------------------------------------------------------


class VoiceService:
    """Voice reads and writes for one request (cheap; build one per use)."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._store = deps.voices

    @property
    def warm_registry(self) -> WarmRegistry:
        """The module's warm registry (platform §6.7)."""
        return WarmRegistry(
            self._deps.runtime.redis,
            self._deps.runtime.spec.module,
            ttl_s=self._deps.settings.warm_registry_ttl_s,
        )

    # ----- the interface other modules use ---------------------------------------------

    async def visible(
        self, tenant_id: str, user_id: str, voice_id: str, *, include_deleted: bool = False
    ) -> Voice:
        """The voice if the caller can see it, else 404 ``SCAISPEAK_VOICE_NOT_FOUND``."""
        voice = await self._store.get_visible(
            tenant_id, user_id, voice_id, include_deleted=include_deleted
        )
        if voice is None:
            raise voice_not_found()
        return voice

    async def usable(self, tenant_id: str, user_id: str, voice_id: str, chars: int) -> Voice:
        """A voice that may synthesise ``chars`` characters now (§4.2 step 2).

        404 when not visible, 409 ``SCAISPEAK_VOICE_NOT_READY`` when not ``ready``, and for
        global voices 403 ``SCAISPEAK_VOICE_LICENSE_EXPIRED`` / ``_CAP_EXCEEDED``.
        """
        voice = await self.visible(tenant_id, user_id, voice_id)
        if not voice.ready:
            raise ScaiError(
                "SCAISPEAK_VOICE_NOT_READY",
                f"voice not ready (embedding_status: {voice.embedding_status})",
            )
        check_license_use(voice, chars)
        return voice

    async def record_license_use(self, voice: Voice, chars: int) -> None:
        """Count ``chars`` against a global voice's licence (no-op for other voices)."""
        if voice.scope == "global" and chars > 0:
            await self._store.add_license_chars(voice.id, chars)

    async def find_global_by_name(self, name: str) -> Voice | None:
        """The live global voice called ``name`` (case-insensitive), if any."""
        return await self._store.find_global_by_name(name)

    async def note_warm(self, voice: Voice, node_id: str) -> None:
        """Record that ``node_id`` synthesised ``voice`` and may cache it (never raises)."""
        try:
            node = await self._deps.runtime.nodes.get(node_id)
            if node is None:
                return
            await self.warm_registry.record(WARM_KIND, cache_tenant(voice), voice.id, node)
        except Exception as exc:
            log.warning("warm_note_failed", voice_id=voice.id, error=type(exc).__name__)

    # ----- routes' behaviour ---------------------------------------------------------------

    async def list(
        self, principal: Principal, filters: VoiceFilters, *, limit: int, cursor: str | None
    ) -> Page[Voice]:
        """One page of the §7.2 ranking; the read is audited (one row with the count)."""
        tenant_id = caller_tenant(principal)
        page = await self._store.list_visible(
            tenant_id, principal.user_id, filters, limit=limit, cursor=cursor
        )
        await self._deps.audit.write(
            principal,
            action="scaispeak.voice.list",
            status="SUCCESS",
            resource_type="voice",
            resource_id=None,
            details={
                "count": len(page.items),
                "filters": {k: v for k, v in filters.as_dict().items() if v is not None},
            },
        )
        return page

    async def get(self, principal: Principal, voice_id: str, origin: Origin) -> Voice:
        """One visible voice; reads of tenant and user voices are audited (fail closed)."""
        voice = await self.visible(caller_tenant(principal), principal.user_id, voice_id)
        if voice.scope != "global":
            await audit_voice(self._deps, principal, "scaispeak.voice.read", voice.id, origin)
        return voice

    async def modifiable(
        self, principal: Principal, voice_id: str, *, include_deleted: bool = False
    ) -> Voice:
        """A voice the caller may modify (§7.7): 404 when not visible, else 403 when not allowed.

        With ``include_deleted`` a tombstoned voice is accepted for whoever could modify it
        before; anyone else gets 404 for it (its existence is not disclosed).
        """
        voice = await self.visible(
            caller_tenant(principal), principal.user_id, voice_id, include_deleted=include_deleted
        )
        if not may_modify(principal, voice):
            if voice.deleted:
                raise voice_not_found()
            if voice.scope == "global":
                raise not_owner("only a super admin may modify a global voice")
            raise not_owner("only the owner or a scaispeak:admin holder may modify this voice")
        return voice

    async def patch(
        self, principal: Principal, voice_id: str, body: VoicePatch, origin: Origin
    ) -> Voice:
        """Apply a PATCH (§7.7) and audit it in the same transaction."""
        voice = await self.modifiable(principal, voice_id)
        changes = patch_changes(voice, body)
        async with self._deps.runtime.pool.connection() as conn, conn.transaction():
            try:
                updated = await self._store.update(voice.id, changes, conn=conn)
            except psycopg.errors.UniqueViolation:
                raise name_conflict(str(changes.get("display_name"))) from None
            if updated is None:
                raise voice_not_found()
            await audit_voice(
                self._deps,
                principal,
                "scaispeak.voice.update",
                voice.id,
                origin,
                conn=conn,
                details={"fields": sorted(changes)},
            )
        return updated

    async def share(self, principal: Principal, voice_id: str, origin: Origin) -> Voice:
        """Move the caller's own user voice to tenant scope (§7.12); idempotent."""
        voice = await self.visible(caller_tenant(principal), principal.user_id, voice_id)
        if voice.scope == "global":
            raise not_owner("global voices cannot be shared")
        if voice.owner_user_id != principal.user_id:
            raise not_owner("only the owner may share this voice")
        if voice.scope == "tenant":
            return voice
        async with self._deps.runtime.pool.connection() as conn, conn.transaction():
            shared = await self._store.share(voice.id, principal.user_id, conn=conn)
            if shared is None:
                again = await self._store.get(voice.id)
                if again is None or again.deleted:
                    raise voice_not_found()
                return again  # shared concurrently: unchanged
            await audit_voice(
                self._deps,
                principal,
                "scaispeak.voice.share",
                voice.id,
                origin,
                conn=conn,
                details={"from_scope": "user", "to_scope": "tenant"},
            )
        return shared

    async def warm_nodes(self, principal: Principal, voice_id: str) -> dict[str, Any]:
        """``GET /voices/{id}/warm`` (§7.11): nodes that may cache the voice."""
        voice = await self.visible(caller_tenant(principal), principal.user_id, voice_id)
        try:
            holders = await self.warm_registry.holders(
                WARM_KIND, cache_tenant(voice), voice.id, registry=self._deps.runtime.nodes
            )
        except RegistryUnreadable:
            raise service_unavailable("node registry unreadable") from None
        return {"voice_id": voice.id, "warm_node_ids": holders}

    async def warm(self, principal: Principal, voice_id: str, origin: Origin) -> dict[str, Any]:
        """``POST /voices/{id}/warm`` (§7.11): a no-op for ready voices, 409 otherwise."""
        voice = await self.visible(caller_tenant(principal), principal.user_id, voice_id)
        if not voice.ready:
            raise ScaiError(
                "SCAISPEAK_VOICE_NOT_READY_FOR_WARMING",
                f"voice is not ready (embedding_status: {voice.embedding_status})",
            )
        await audit_voice(
            self._deps,
            principal,
            "scaispeak.voice.warm",
            voice.id,
            origin,
            details={"warmed": False},
        )
        return {"voice_id": voice.id, "warmed": False, "note": WARM_NOTE}

    async def create_global(
        self, principal: Principal, form: GlobalVoiceInput, origin: Origin
    ) -> Voice:
        """Import a global voice (§12.3): name check, reference preflight and storage, insert."""
        if await self._store.find_global_by_name(form.display_name) is not None:
            raise name_conflict(form.display_name)
        voice_id = new_id("voice")
        reference_key = reference_sha256 = None
        preflight: dict[str, Any] | None = None
        if form.reference is not None:
            from scaispeak.services.intake import IntakeService

            upload = form.reference
            reference_key, reference_sha256, preflight = await IntakeService(
                self._deps
            ).store_reference(
                voice_id,
                upload.path,
                filename=upload.filename,
                content_type=upload.content_type,
            )
        new = NewVoice(
            id=voice_id,
            scope="global",
            kind="global",
            tenant_id=None,
            owner_user_id=None,
            display_name=form.display_name,
            language_primary=form.language_primary,
            request_id=current_request_id(),
            description=form.description,
            language_supported=form.language_supported,
            gender_hint=form.gender_hint,
            age_hint=form.age_hint,
            style_tags=form.style_tags,
            defaults=form.defaults,
            license=form.license,
            relay_voice=form.relay_voice,
            preflight=preflight,
            reference_key=reference_key,
            reference_sha256=reference_sha256,
        )
        try:
            async with self._deps.runtime.pool.connection() as conn, conn.transaction():
                voice = await self._store.insert(new, conn=conn)
                await audit_voice(
                    self._deps,
                    principal,
                    "scaispeak.voice.create",
                    voice_id,
                    origin,
                    conn=conn,
                    details={
                        "scope": "global",
                        "kind": "global",
                        "license_type": form.license.get("license_type"),
                        "reference": reference_key is not None,
                    },
                )
        except BaseException as exc:
            if reference_key is not None:
                await self._drop_reference(reference_key)
            if isinstance(exc, psycopg.errors.UniqueViolation):
                raise name_conflict(form.display_name) from None
            raise
        return voice

    async def _drop_reference(self, key: str) -> None:
        try:
            await self._deps.runtime.objects.delete(key)
        except Exception as exc:
            log.warning("global_reference_cleanup_failed", key=key, error=type(exc).__name__)


def check_license_use(voice: Voice, chars: int) -> None:
    """403 when a global voice's licence has expired or ``chars`` would pass its cap."""
    if voice.scope != "global" or not voice.license:
        return
    expires = voice.license.get("license_expires_at")
    if expires:
        try:
            expired = utcnow() > parse_ts(str(expires))
        except ValueError:
            expired = True
        if expired:
            raise ScaiError(
                "SCAISPEAK_VOICE_LICENSE_EXPIRED", f"the licence of this voice expired at {expires}"
            )
    cap = voice.license.get("license_char_cap")
    if cap is not None and voice.license_chars_used + chars > int(cap):
        raise ScaiError(
            "SCAISPEAK_VOICE_LICENSE_CAP_EXCEEDED",
            "this request would exceed the voice's licensed character cap",
        )


def patch_changes(voice: Voice, body: VoicePatch) -> dict[str, Any]:
    """The validated column changes of a PATCH on ``voice``; 422 naming every broken field."""
    details: Details = []
    changes: dict[str, Any] = {}
    if body.display_name is not UNSET:
        changes["display_name"] = check_display_name(details, body.display_name)
    if body.description is not UNSET:
        changes["description"] = check_description(details, body.description)
    primary = voice.language_primary
    if body.language_primary is not UNSET:
        checked = check_language(details, body.language_primary, "language_primary")
        if checked is not None:
            primary = changes["language_primary"] = checked
    supported: list[str] = list(voice.language_supported)
    if body.language_supported is not UNSET:
        supported = check_languages(details, body.language_supported, "language_supported") or []
    if body.language_supported is not UNSET or "language_primary" in changes:
        changes["language_supported"] = with_primary(primary, supported)
    if body.gender_hint is not UNSET:
        changes["gender_hint"] = check_enum(details, body.gender_hint, "gender_hint", GENDERS)
    if body.age_hint is not UNSET:
        changes["age_hint"] = check_enum(details, body.age_hint, "age_hint", AGES)
    if body.style_tags is not UNSET:
        changes["style_tags"] = check_style_tags(details, body.style_tags)
    if body.defaults is not UNSET:
        changes["defaults"] = check_defaults(details, body.defaults, voice.defaults)
    is_global = voice.scope == "global"
    if body.license is not UNSET:
        if not is_global:
            details.append({"field": "license", "message": "only global voices carry a licence"})
        else:
            changes["license"] = _patched_license(details, voice, body.license)
    if body.relay_voice is not UNSET:
        if not is_global:
            details.append(
                {"field": "relay_voice", "message": "only global voices have a relay_voice"}
            )
        elif body.relay_voice is None:
            if voice.reference_key is None:
                details.append(
                    {
                        "field": "relay_voice",
                        "message": "a global voice without a reference clip needs a relay_voice",
                    }
                )
            changes["relay_voice"] = None
        else:
            changes["relay_voice"] = check_relay_voice(details, body.relay_voice)
    if details:
        raise invalid(details)
    return changes


def _patched_license(details: Details, voice: Voice, patch: Mapping[str, Any]) -> dict[str, Any]:
    for key in patch:
        if key == "license_chars_used":
            details.append({"field": "license.license_chars_used", "message": "read-only"})
        elif key not in LICENSE_KEYS:
            details.append(
                {
                    "field": f"license.{key}",
                    "message": f"unknown; allowed: {', '.join(LICENSE_KEYS)}",
                }
            )
    merged = {k: (voice.license or {}).get(k) for k in LICENSE_KEYS}
    merged.update({k: v for k, v in patch.items() if k in LICENSE_KEYS})
    return check_license(details, merged, "license.")
