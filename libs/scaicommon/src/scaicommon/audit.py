"""Audit log and erasure audit writers (platform §10).

Both tables are append-only: triggers refuse ``UPDATE``, ``DELETE`` and ``TRUNCATE`` with
SQLSTATE 42501, so these writers only ever ``INSERT`` and ``SELECT``.

How a write failure is handled depends on the call site (§10.1):

- mutations pass their transaction's connection as ``conn=``, so a failed audit insert rolls
  the change back (the exception propagates and becomes ``INTERNAL_ERROR``);
- biometric reads call :meth:`AuditWriter.write` before responding and fail closed;
- inference calls use :meth:`AuditWriter.write_or_log`, which logs the full row as
  ``audit_write_failed`` and never raises.
"""

from __future__ import annotations

import builtins
import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, Final, Required, TypedDict

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from typing_extensions import Unpack

from scaicommon.ids import new_id
from scaicommon.logging import REDACTED, scrub
from scaicommon.pagination import FilterSpec, Page, fetch_tenant_page
from scaicommon.principal import Principal
from scaicommon.timefmt import format_ts

log = structlog.get_logger("scaicommon.audit")

VERBS: Final = (
    "create",
    "read",
    "list",
    "update",
    "delete",
    "share",
    "open",
    "warm",
    "evict",
    "export",
)
ACTION_RE: Final = re.compile(r"^([a-z][a-z0-9]*)\.([a-z][a-z0-9_]*)\.(" + "|".join(VERBS) + r")$")
AUDIT_STATUSES: Final = ("SUCCESS", "FAILURE")
ERASURE_EVENTS: Final = (
    "requested",
    "artifact_deleted",
    "node_evicted",
    "node_evict_failed",
    "completed",
)
ERASURE_SUBJECTS: Final = ("speaker", "voice")
ERASURE_ACTORS: Final = ("user", "service", "system")
_USER_AGENT_MAX: Final = 512
# Keys whose values are always secrets. Plain ``key`` is not one: erasure rows record storage
# object keys.
_SECRET_KEYS: Final = frozenset(
    {
        "authorization",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "client_secret",
        "password",
        "secret",
    }
)

_AUDIT_FILTERS: Final = {
    "action": FilterSpec("action"),
    "status": FilterSpec("status"),
    "actor_id": FilterSpec("actor_id"),
    "resource_type": FilterSpec("resource_type"),
    "resource_id": FilterSpec("resource_id"),
    "request_id": FilterSpec("request_id"),
    "since": FilterSpec("created_at", ">="),
    "until": FilterSpec("created_at", "<"),
}
_ERASURE_FILTERS: Final = {
    "subject_type": FilterSpec("subject_type"),
    "subject_id": FilterSpec("subject_id"),
    "event": FilterSpec("event"),
    "since": FilterSpec("created_at", ">="),
    "until": FilterSpec("created_at", "<"),
}


def check_action(action: str, module: str | None = None) -> str:
    """Validate ``<module>.<resource>.<verb>`` (verbs of §10.1); raises ``ValueError``."""
    match = ACTION_RE.match(action)
    if not match:
        raise ValueError(
            f"audit action {action!r} is not <module>.<resource>.<verb> with a verb from {VERBS}"
        )
    if module is not None and match.group(1) != module:
        raise ValueError(f"audit action {action!r} does not belong to module {module!r}")
    return action


def scrub_details(value: Any, key: str = "") -> Any:
    """Deep copy of ``details`` with secrets removed: secret-named keys and token patterns."""
    if key.lower() in _SECRET_KEYS and value is not None:
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): scrub_details(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_details(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    raise TypeError(f"audit details cannot hold {type(value).__name__}")


_dumps = partial(json.dumps, default=_json_default, ensure_ascii=False)


def _details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    cleaned = scrub_details(dict(details or {}))
    # Round-trip through JSON so what is logged is exactly what would have been stored.
    result: dict[str, Any] = json.loads(_dumps(cleaned))
    return result


def _ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, datetime):
            out[name] = format_ts(value)
        elif isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            out[name] = str(value)
        else:
            out[name] = value
    return out


def audit_row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON shape of an ``audit_log`` row: ``timestamp`` from ``created_at``, then columns."""
    data = _json_row(row)
    created = data.pop("created_at", None)
    return {"id": data.pop("id", None), "timestamp": created, **data}


Connection = psycopg.AsyncConnection[Any]


class AuditEvent(TypedDict, total=False):
    """What one audit row says beyond the principal (§10.1); the first three are required."""

    action: Required[str]
    status: Required[str]
    resource_type: Required[str]
    resource_id: str | None
    error_code: str | None
    http_status: int | None
    ip_address: str | None
    user_agent: str | None
    details: Mapping[str, Any] | None


class AuditWriter:
    """Appends ``audit_log`` rows and lists them.

    With ``module`` set, every action must start with ``<module>.``.
    """

    def __init__(self, pool: AsyncConnectionPool[Any], *, module: str | None = None) -> None:
        self._pool = pool
        self.module = module

    def build_row(self, principal: Principal, **event: Unpack[AuditEvent]) -> dict[str, Any]:
        """The row :meth:`write` inserts (validated and scrubbed), with a fresh ``audit_`` id."""
        action, status = event["action"], event["status"]
        resource_type = event["resource_type"]
        user_agent = event.get("user_agent")
        check_action(action, self.module)
        state = status.upper()
        if state not in AUDIT_STATUSES:
            raise ValueError(f"audit status must be SUCCESS or FAILURE, got {status!r}")
        if not resource_type:
            raise ValueError("resource_type is required")
        actor_id = principal.user_id
        if principal.auth_kind == "service" and principal.client_id:
            actor_id = principal.client_id
        agent = scrub(user_agent)[:_USER_AGENT_MAX] if user_agent else None
        return {
            "id": new_id("audit"),
            "action": action,
            "status": state,
            "error_code": event.get("error_code"),
            "http_status": event.get("http_status"),
            "actor_id": actor_id,
            "actor_type": principal.actor_type,
            "actor_email": principal.email,
            "api_key_id": principal.api_key_id,
            "service_account": principal.service_account,
            # A principal without a tenant (super_admin, no X-Tenant-ID) is recorded as "".
            "tenant_id": principal.tenant_id or "",
            "partner_id": principal.partner_id,
            "resource_type": resource_type,
            "resource_id": event.get("resource_id"),
            "request_id": principal.request_id,
            "ip_address": _ip(event.get("ip_address")),
            "user_agent": agent,
            "details": _details(event.get("details")),
        }

    async def write(
        self, principal: Principal, *, conn: Connection | None = None, **event: Unpack[AuditEvent]
    ) -> str:
        """Insert one audit row and return its id; raises when the insert fails.

        Pass ``conn`` (inside ``conn.transaction()``) to make the row part of a mutation.
        """
        row = self.build_row(principal, **event)
        await self.insert_row(row, conn=conn)
        return str(row["id"])

    async def insert_row(self, row: Mapping[str, Any], *, conn: Connection | None = None) -> None:
        """Insert a row built by :meth:`build_row` (also the recovery path for logged rows)."""
        columns = list(row)
        values = [Jsonb(row[c], dumps=_dumps) if c == "details" else row[c] for c in columns]
        query = sql.SQL("INSERT INTO audit_log ({}) VALUES ({})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.SQL(", ").join(sql.Placeholder() for _ in columns),
        )
        if conn is not None:
            await conn.execute(query, values)
            return
        async with self._pool.connection() as own:
            await own.execute(query, values)

    async def write_or_log(self, principal: Principal, **event: Unpack[AuditEvent]) -> str | None:
        """Insert an audit row for an inference call; on failure log it and return ``None``.

        The log event is ``audit_write_failed`` with the whole row under ``row``, so it can be
        re-inserted later with :meth:`insert_row`. Invalid arguments still raise ``ValueError``.
        """
        row = self.build_row(principal, **event)
        try:
            await self.insert_row(row)
        except Exception as exc:
            log.error("audit_write_failed", row=row, error=type(exc).__name__)
            return None
        return str(row["id"])

    async def list(
        self,
        tenant_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> Page[dict[str, Any]]:
        """A page of a tenant's audit rows, newest first, in their JSON shape.

        ``filters``: ``action``, ``status``, ``actor_id``, ``resource_type``, ``resource_id``,
        ``request_id``, ``since`` (inclusive), ``until`` (exclusive). Parse ``limit`` with
        :func:`scaicommon.pagination.parse_log_limit` (1..1000, default 100).
        """
        page = await fetch_tenant_page(
            self._pool,
            "audit_log",
            tenant_id=tenant_id,
            filters=filters,
            specs=_AUDIT_FILTERS,
            limit=limit,
            cursor=cursor,
        )
        return page.map(audit_row_json)


class ErasureAuditWriter:
    """Appends ``erasure_audit`` events (one per erasure step) and lists them."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def append(
        self,
        event: str,
        tenant_id: str,
        subject_type: str,
        subject_id: str,
        actor_id: str,
        actor_type: str,
        request_id: str | None = None,
        node_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> str:
        """Insert one erasure event and return its ``era_`` id; raises when the insert fails."""
        if event not in ERASURE_EVENTS:
            raise ValueError(f"erasure event must be one of {ERASURE_EVENTS}, got {event!r}")
        if subject_type not in ERASURE_SUBJECTS:
            raise ValueError(f"subject_type must be one of {ERASURE_SUBJECTS}")
        if actor_type not in ERASURE_ACTORS:
            raise ValueError(f"actor_type must be one of {ERASURE_ACTORS}")
        row_id = new_id("era")
        query = (
            "INSERT INTO erasure_audit (id, event, tenant_id, subject_type, subject_id, actor_id,"
            " actor_type, request_id, node_id, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s)"
        )
        params = (
            row_id,
            event,
            tenant_id,
            subject_type,
            subject_id,
            actor_id,
            actor_type,
            request_id,
            node_id,
            Jsonb(_details(details), dumps=_dumps),
        )
        if conn is not None:
            await conn.execute(query, params)
        else:
            async with self._pool.connection() as own:
                await own.execute(query, params)
        return row_id

    async def list(
        self,
        tenant_id: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        limit: int,
        cursor: str | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> Page[dict[str, Any]]:
        """A page of a tenant's erasure events, newest first (``created_at`` as ISO Z).

        Extra ``filters``: ``event``, ``since`` (inclusive), ``until`` (exclusive).
        """
        given = {"subject_type": subject_type, "subject_id": subject_id, **(filters or {})}
        page = await fetch_tenant_page(
            self._pool,
            "erasure_audit",
            tenant_id=tenant_id,
            filters=given,
            specs=_ERASURE_FILTERS,
            limit=limit,
            cursor=cursor,
        )
        return page.map(_json_row)

    async def events_for(
        self, tenant_id: str, subject_type: str, subject_id: str
    ) -> builtins.list[dict[str, Any]]:
        """Every event of one subject, oldest first (to summarise one erasure)."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT * FROM erasure_audit WHERE tenant_id = %s AND subject_type = %s"
                " AND subject_id = %s ORDER BY created_at, id",
                (tenant_id, subject_type, subject_id),
            )
            rows = await cur.fetchall()
        return [_json_row(row) for row in rows]
