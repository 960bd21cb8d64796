"""Administration: backend policy, usage, the monthly character budget and ``/config``.

scaispeak.md §2 (``/config``), §12.1 and §12.5. Writes are audited with their change
(``scaispeak.policy.update``, ``scaispeak.budget.update``); reads of usage and budgets are
audited as ``scaispeak.usage.read`` / ``scaispeak.budget.read`` (platform §10.1).

Budget rows: a tenant without a tenant-wide ``month``/``chars`` row is limited by
``SCAISPEAK_DEFAULT_MONTHLY_CHARS_LIMIT`` (0 = unlimited) through the BudgetGuard. ``PUT
/admin/budget`` with ``chars_limit: null`` stores a row holding :data:`UNLIMITED_CHARS` (the
largest amount the column holds), so the default no longer applies to that tenant, now or
after a later change of the setting; the API reports that row as ``null``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

import msgspec

from scaicommon.adminaudit import Origin, audit_success
from scaicommon.errors import validation_error
from scaicommon.periods import period_bounds, period_end
from scaicommon.policy import Policy, parse_speak_allowed
from scaicommon.principal import Principal
from scaicommon.tenantadmin import (
    BUDGET_PERIOD,
    MAX_BUDGET_AMOUNT,
    PolicyAdmin,
    TenantBudgetAdmin,
)
from scaicommon.timefmt import format_ts, parse_ts, utcnow
from scaicommon.usage import Budget
from scaispeak.deps import SpeakDeps
from scaispeak.settings import SpeakSettings
from scaispeak.store.usage_report import GROUPS, GroupBy, UsageReportStore

BUDGET_UNIT: Final = "chars"
#: The amount of a row that means "no limit" (overrides the default for its tenant).
UNLIMITED_CHARS: Final = MAX_BUDGET_AMOUNT
#: The largest ``chars_limit`` a client may set (one below the unlimited marker).
MAX_CHARS_LIMIT: Final = MAX_BUDGET_AMOUNT - 1
#: ``response_formats`` of ``GET /config``: ``aac`` is for the OpenAI-compatible endpoint only.
RESPONSE_FORMATS: Final = ("mp3", "wav", "opus", "flac", "pcm")
SYNTHESIZE_ENGINE: Final = "audio.synthesize"


# ----- response shapes (also the OpenAPI schemas) ---------------------------------------


class Availability(msgspec.Struct):
    """Whether each backend could serve now: A ``ok|degraded|none``, B ``ok|unconfigured|error``."""

    A: str
    B: str


class PolicyView(msgspec.Struct):
    """``GET``/``PATCH /admin/policy`` (§12.1)."""

    tenant_id: str
    allowed_backends: list[str]
    default_backend: str
    availability: Availability
    updated_at: str
    updated_by: str | None


class BudgetView(msgspec.Struct):
    """``GET``/``PUT /admin/budget`` (§12.5); ``chars_limit`` ``null`` = unlimited."""

    tenant_id: str
    period: str
    chars_limit: int | None
    chars_used: int
    resets_at: str


class UsageBreakdown(msgspec.Struct):
    """One group of ``GET /usage``; ``key`` is ``null`` for rows without a voice."""

    key: str | None
    chars: int
    requests: int
    audio_ms: int


class UsageReport(msgspec.Struct):
    """``GET /usage`` (§12.5)."""

    tenant_id: str
    period: str
    period_start: str
    period_end: str
    chars_total: int
    requests: int
    audio_ms_total: int
    chars_limit: int | None
    chars_remaining: int | None
    breakdown: list[UsageBreakdown]


class ConfigView(msgspec.Struct):
    """``GET /config`` (§2): limits and feature switches for clients."""

    async_threshold_chars: int
    max_text_chars: int
    preview_max_chars: int
    openai_max_input_chars: int
    default_stream_codec: str
    response_formats: list[str]
    scaidrive_configured: bool
    webrtc_available: bool


def _ts(value: datetime) -> str:
    text = format_ts(value)
    assert text is not None
    return text


# ----- backend policy ------------------------------------------------------------------


class PolicyService:
    """The tenant's backend policy with the backends' current availability (§12.1)."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._admin = PolicyAdmin(deps.policies, deps.audit, module="scaispeak")

    async def availability(self) -> Availability:
        """A from the node registry (``audio.synthesize``), B from the relay's state."""
        runtime = self._deps.runtime
        a_state, _ = await runtime.nodes.readiness([SYNTHESIZE_ENGINE])
        b_state, _ = runtime.relay.readiness()
        return Availability(A=a_state, B=b_state)

    async def view(self, policy: Policy) -> PolicyView:
        """The API object of a stored policy."""
        api = policy.to_speak_api()
        return PolicyView(
            tenant_id=api["tenant_id"],
            allowed_backends=api["allowed_backends"],
            default_backend=api["default_backend"],
            availability=await self.availability(),
            updated_at=api["updated_at"],
            updated_by=api["updated_by"],
        )

    async def get(self, tenant_id: str) -> PolicyView:
        """The tenant's policy, provisioned from the defaults on first read."""
        return await self.view(await self._admin.get(tenant_id))

    async def update(
        self,
        principal: Principal,
        *,
        allowed_backends: object | None,
        default_backend: str | None,
        origin: Origin | None = None,
    ) -> PolicyView:
        """Merge the given fields and audit the change in the same transaction.

        ``allowed_backends`` is the list form (``["A"]``, ``["B"]``, ``["A","B"]`` in any
        order). Raises ``VALIDATION_ERROR`` for no field, an unknown value, or a default that
        is not allowed (``details`` on ``default_backend``).
        """
        principal.require_tenant()
        allowed = parse_speak_allowed(allowed_backends) if allowed_backends is not None else None
        after = await self._admin.update(
            principal, allowed=allowed, default=default_backend, origin=origin
        )
        return await self.view(after)


# ----- budget --------------------------------------------------------------------------


class BudgetService:
    """The tenant's monthly character budget (§12.5)."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._default = deps.settings.default_monthly_chars_limit or None
        self._admin = TenantBudgetAdmin(
            deps.budgets,
            deps.audit,
            module="scaispeak",
            unit=BUDGET_UNIT,
            limit_field="chars_limit",
            limit_of=self.limit_of,
        )

    def limit_of(self, budget: Budget | None) -> int | None:
        """The limit a row (or its absence: the default) puts on the tenant; ``None`` = none."""
        if budget is None:
            return self._default
        if budget.amount >= UNLIMITED_CHARS:
            return None
        return int(budget.amount)

    async def limit(self, tenant_id: str) -> int | None:
        """The tenant's current monthly limit."""
        return self.limit_of(await self._admin.current(tenant_id))

    async def used(self, tenant_id: str, *, at: datetime | None = None) -> int:
        """Characters used this month (the figure the BudgetGuard admits against)."""
        return await self._deps.usage.used(tenant_id, None, "month", BUDGET_UNIT, at=at)

    async def view(self, tenant_id: str, budget: Budget | None) -> BudgetView:
        """The API object for a row (or its absence)."""
        now = utcnow()
        return BudgetView(
            tenant_id=tenant_id,
            period=BUDGET_PERIOD,
            chars_limit=self.limit_of(budget),
            chars_used=await self.used(tenant_id, at=now),
            resets_at=_ts(period_end("month", now)),
        )

    async def read(self, principal: Principal, *, origin: Origin | None = None) -> BudgetView:
        """``GET /admin/budget``; audited as ``scaispeak.budget.read``."""
        budget = await self._admin.read(principal, origin=origin)
        return await self.view(principal.require_tenant(), budget)

    async def set(
        self, principal: Principal, chars_limit: int | None, *, origin: Origin | None = None
    ) -> BudgetView:
        """Store the monthly limit (``None``: unlimited, whatever the default) and audit it."""
        tenant_id = principal.require_tenant()
        if chars_limit is not None and not 0 <= chars_limit <= MAX_CHARS_LIMIT:
            raise validation_error(
                "chars_limit", f"must be an integer from 0 to {MAX_CHARS_LIMIT}, or null"
            )
        amount = Decimal(UNLIMITED_CHARS if chars_limit is None else chars_limit)
        after = await self._admin.replace(principal, amount, origin=origin)
        return await self.view(tenant_id, after)


# ----- usage ---------------------------------------------------------------------------


def parse_instant(field: str, raw: str) -> datetime:
    """``start``/``end``: an RFC 3339 timestamp with an offset, or a ``YYYY-MM-DD`` date (UTC).

    Raises ``VALIDATION_ERROR`` on ``field``.
    """
    text = raw.strip()
    try:
        if len(text) == 10:
            return parse_ts(text + "T00:00:00Z")
        if "T" in text or "t" in text:
            return parse_ts(text)
    except ValueError:
        pass
    raise validation_error(field, "expected YYYY-MM-DD or an RFC 3339 timestamp with an offset")


def parse_range(
    start: str | None, end: str | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The ``[start, end)`` of ``GET /usage``; each bound defaults to the current month's."""
    month_start, month_end = period_bounds("month", now or utcnow())
    lower = parse_instant("start", start) if start is not None else month_start
    upper = parse_instant("end", end) if end is not None else month_end
    if upper <= lower:
        raise validation_error("end", "must be after start")
    return lower, upper


def parse_group_by(raw: str | None) -> GroupBy | None:
    """``group_by``: ``user``, ``voice``, ``backend`` or ``day`` (absent: no breakdown)."""
    if raw is None:
        return None
    for group in GROUPS:
        if raw == group:
            return group  # type: ignore[return-value]
    raise validation_error("group_by", "must be one of user, voice, backend, day")


class UsageService:
    """``GET /usage`` (§12.5)."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._store = UsageReportStore(deps.runtime.pool)

    async def report(
        self,
        principal: Principal,
        start: datetime,
        end: datetime,
        *,
        group_by: GroupBy | None = None,
        origin: Origin | None = None,
    ) -> UsageReport:
        """Sums over ``[start, end)``; ``chars_remaining`` is against this month's budget.

        Audited as ``scaispeak.usage.read``.
        """
        tenant_id = principal.require_tenant()
        sums = await self._store.sums(tenant_id, start, end, group_by=group_by)
        budgets = BudgetService(self._deps)
        limit = await budgets.limit(tenant_id)
        remaining = None if limit is None else max(0, limit - await budgets.used(tenant_id))
        await audit_success(
            self._deps.audit,
            principal,
            action="scaispeak.usage.read",
            resource_type="usage",
            origin=origin,
            details={"start": _ts(start), "end": _ts(end), "group_by": group_by},
        )
        return UsageReport(
            tenant_id=tenant_id,
            period=BUDGET_PERIOD,
            period_start=_ts(start),
            period_end=_ts(end),
            chars_total=sums.chars,
            requests=sums.requests,
            audio_ms_total=sums.audio_ms,
            chars_limit=limit,
            chars_remaining=remaining,
            breakdown=[
                UsageBreakdown(key=g.key, chars=g.chars, requests=g.requests, audio_ms=g.audio_ms)
                for g in sums.groups
            ],
        )


# ----- config --------------------------------------------------------------------------


def config_view(settings: SpeakSettings) -> ConfigView:
    """``GET /config``: the limits and switches clients need (WebRTC is not offered)."""
    return ConfigView(
        async_threshold_chars=settings.async_threshold_chars,
        max_text_chars=settings.max_text_chars,
        preview_max_chars=settings.preview_max_chars,
        openai_max_input_chars=settings.openai_max_input_chars,
        default_stream_codec=settings.default_stream_codec,
        response_formats=list(RESPONSE_FORMATS),
        scaidrive_configured=bool(settings.scaidrive_url.strip()),
        webrtc_available=False,
    )
