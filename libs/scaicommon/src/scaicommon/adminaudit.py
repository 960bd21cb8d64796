"""Audit helpers for administrative writes (platform §10.1).

A write that fails after authentication (403, 422, 500 …) is audited with ``FAILURE``; the
success row is written by the service (:func:`audit_success`), in the same transaction as the
change where it can.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from scaicommon.audit import AuditWriter, Connection
from scaicommon.envelope import to_scai_error
from scaicommon.middleware import principal_of
from scaicommon.principal import Principal


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for audit rows."""

    ip_address: str | None = None
    user_agent: str | None = None


def origin_of(connection: HTTPConnection) -> Origin:
    """The caller's address and user agent (routes hand this to services)."""
    client = connection.client
    return Origin(
        ip_address=client.host if client else None,
        user_agent=connection.headers.get("user-agent"),
    )


async def audit_success(
    audit: AuditWriter,
    principal: Principal,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    origin: Origin | None = None,
    conn: Connection | None = None,
) -> None:
    """Insert the ``SUCCESS`` row of an administrative call, with where it came from.

    Raises when the insert fails; pass ``conn`` to make the row part of the change.
    """
    where = origin or Origin()
    await audit.write(
        principal,
        conn=conn,
        action=action,
        status="SUCCESS",
        resource_type=resource_type,
        resource_id=resource_id,
        ip_address=where.ip_address,
        user_agent=where.user_agent,
        details=details,
    )


@asynccontextmanager
async def audit_failures(
    audit: AuditWriter,
    principal: Principal,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    origin: Origin | None = None,
) -> AsyncIterator[None]:
    """Record a ``FAILURE`` row when the body raises (403, 422, 500 …), then re-raise.

    Nothing was changed by a failed write, so the row is best-effort
    (:meth:`AuditWriter.write_or_log`). ``details.fields`` names the fields of a validation
    error.
    """
    try:
        yield
    except Exception as exc:
        error = to_scai_error(exc)
        details: dict[str, Any] = {}
        if error.details:
            details["fields"] = [d.get("field") for d in error.details]
        where = origin or Origin()
        await audit.write_or_log(
            principal,
            action=action,
            status="FAILURE",
            resource_type=resource_type,
            resource_id=resource_id,
            error_code=error.code,
            http_status=error.http_status,
            ip_address=where.ip_address,
            user_agent=where.user_agent,
            details=details,
        )
        raise


@asynccontextmanager
async def audited_write(
    connection: HTTPConnection,
    audit: AuditWriter,
    *,
    permission: str,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
) -> AsyncIterator[tuple[Principal, Origin]]:
    """The caller and its origin, for a write that needs ``permission``.

    The permission check runs inside :func:`audit_failures`, so a refusal is audited like any
    other failure of the body.
    """
    principal = principal_of(connection)
    origin = origin_of(connection)
    async with audit_failures(
        audit,
        principal,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        origin=origin,
    ):
        principal.require(permission)
        yield principal, origin
