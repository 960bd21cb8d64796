"""Global voices (super admin) and the erasure audit (scaispeak.md §12.3, §12.4)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.envelope import listing, success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.pagination import parse_log_limit
from scaicommon.runtime import Runtime
from scaicommon.uploads import read_multipart
from scaispeak.deps import deps_of
from scaispeak.permissions import ADMIN
from scaispeak.routes.voices import voice_write
from scaispeak.services.erasure import (
    AuditQuery,
    ErasureService,
    erasure_tenant,
    super_admin_only,
)
from scaispeak.services.voices import VoiceService, parse_global_form

#: Room for the text fields of a global-voice form beside its reference file.
_FORM_OVERHEAD_BYTES = 1 << 20


def admin_voice_routes(runtime: Runtime) -> list[BaseRoute]:
    """``/admin/voices/global`` and ``/admin/erasure/audit`` under the mount."""
    mount = runtime.spec.mount

    @api(
        "Import a licensed global voice (super admin): reference clip and/or relay voice",
        permission=f"{ADMIN} and role super_admin",
        multipart=True,
        status=201,
        tags=["admin", "voices"],
    )
    async def create_global(request: Request) -> Response:
        # A refusal before the upload is read still reaches the client: the app's
        # DrainBodyMiddleware reads the body before an error answer goes out.
        async with voice_write(runtime, request, "scaispeak.voice.create", ADMIN) as write:
            super_admin_only(write.principal)
            limit = write.deps.settings.max_upload_bytes
            form = await read_multipart(
                request, max_bytes=limit + _FORM_OVERHEAD_BYTES, max_file_bytes=limit
            )
            async with form:
                parsed = parse_global_form(form.fields, form.files.get("reference"))
                voice = await VoiceService(write.deps).create_global(
                    write.principal, parsed, write.origin
                )
        return success(voice.to_api(), status_code=201)

    @api(
        "Remove a global voice (super admin): the erasure of DELETE /voices/{id}",
        permission=f"{ADMIN} and role super_admin",
        tags=["admin", "voices"],
    )
    async def delete_global(request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        async with voice_write(runtime, request, "scaispeak.voice.delete", ADMIN) as write:
            super_admin_only(write.principal)
            result = await ErasureService(write.deps).delete_global(
                write.principal, voice_id, write.origin
            )
        return success(result)

    @api(
        "Voice erasures of the tenant, newest first, each summarised from its events",
        permission=ADMIN,
        query={
            "voice_id": "one voice",
            "pending": "true: erasures with nodes still pending; false: completed ones",
            "since": "requested at or after (RFC 3339)",
            "until": "requested before (RFC 3339)",
            "limit": "1-1000, default 100",
            "cursor": "opaque",
        },
        tags=["admin"],
    )
    async def erasure_audit(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        tenant_id = erasure_tenant(principal)
        query = request.query_params
        filters = AuditQuery.parse(query)
        deps = deps_of(runtime)
        page = await ErasureService(deps).list_audit(
            tenant_id,
            filters,
            limit=parse_log_limit(query.get("limit")),
            cursor=query.get("cursor"),
        )
        await deps.audit.write(
            principal,
            action="scaispeak.erasure_audit.read",
            status="SUCCESS",
            resource_type="erasure_audit",
            resource_id=None,
            details={"count": len(page.items), "voice_id": filters.voice_id},
        )
        return listing(page.items, has_more=page.has_more, next_cursor=page.next_cursor)

    return [
        Route(f"{mount}/admin/voices/global", create_global, methods=["POST"]),
        Route(f"{mount}/admin/voices/global/{{voice_id}}", delete_global, methods=["DELETE"]),
        Route(f"{mount}/admin/erasure/audit", erasure_audit, methods=["GET"]),
    ]
