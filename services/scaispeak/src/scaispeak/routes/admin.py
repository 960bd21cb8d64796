"""Administration routes (scaispeak.md §2 ``/config`` and node listing, §12.1, §12.2, §12.5).

Policy, blocklist, usage and budget sit under the mount; the node listing is served at
``/v1/admin/nodes``, ``/v1/infra/nodes`` and ``<mount>/admin/nodes`` by the shared handler.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.adminaudit import Origin, audited_write
from scaicommon.bodies import RequestBody, read_json
from scaicommon.envelope import listing, success
from scaicommon.errors import ScaiError, validation_error
from scaicommon.middleware import principal_of
from scaicommon.nodelisting import node_listing_routes
from scaicommon.openapi import api
from scaicommon.pagination import parse_limit
from scaicommon.principal import Principal
from scaicommon.runtime import Runtime
from scaicommon.tenantroutes import budget_routes, policy_routes, usage_route
from scaispeak.deps import SpeakDeps, deps_of
from scaispeak.permissions import ADMIN, PERMISSIONS, SYNTHESIZE
from scaispeak.services.admin import (
    MAX_CHARS_LIMIT,
    BudgetService,
    BudgetView,
    ConfigView,
    PolicyService,
    PolicyView,
    UsageReport,
    UsageService,
    config_view,
    parse_group_by,
    parse_range,
)
from scaispeak.services.blocklist import MAX_DESCRIPTION_CHARS, BlocklistService

NODE_PATHS = ("/v1/admin/nodes", "/v1/infra/nodes")


class PolicyPatch(RequestBody):
    """``PATCH /admin/policy``: at least one field; merged into the stored policy."""

    allowed_backends: (
        Annotated[list[str], msgspec.Meta(description='["A"], ["B"] or ["A","B"] in any order')]
        | UnsetType
    ) = UNSET
    default_backend: Annotated[str, msgspec.Meta(description="'A' or 'B'")] | UnsetType = UNSET


class BlocklistCreate(RequestBody):
    """``POST /admin/blocklist``."""

    pattern: Annotated[str, msgspec.Meta(description="1 to 500 characters")] | UnsetType = UNSET
    match: Annotated[str, msgspec.Meta(description="'substring' or 'regex'")] | UnsetType = UNSET
    description: (
        Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION_CHARS)] | UnsetType | None
    ) = UNSET


class BlocklistEntryView(msgspec.Struct):
    """One blocklist entry."""

    id: str
    pattern: str
    match: str
    description: str | None
    created_by: str
    created_at: str


class BlocklistList(msgspec.Struct):
    """``data`` of ``GET /admin/blocklist``."""

    items: list[BlocklistEntryView]


class BlocklistDeleted(msgspec.Struct):
    """``DELETE /admin/blocklist/{id}``."""

    id: str
    deleted: bool


CharsLimit = Annotated[int, msgspec.Meta(ge=0, le=MAX_CHARS_LIMIT)]


class BudgetPut(RequestBody):
    """``PUT /admin/budget``: both fields required; ``null`` means unlimited."""

    period: Annotated[str, msgspec.Meta(description="must be 'month'")] | UnsetType = UNSET
    chars_limit: CharsLimit | UnsetType | None = UNSET


def require_any_permission(principal: Principal) -> None:
    """``AUTHZ_PERMISSION_DENIED`` unless the caller holds at least one module key."""
    if not principal.effective_permissions() & PERMISSIONS.all_keys:
        keys = " or ".join(sorted(PERMISSIONS.all_keys))
        raise ScaiError(
            "AUTHZ_PERMISSION_DENIED",
            "this call needs any scaispeak permission",
            required_permission=keys,
        )


async def read_usage(
    deps: SpeakDeps, principal: Principal, query: QueryParams, origin: Origin
) -> UsageReport:
    """The report over ``[start, end)`` (default: this month), grouped by ``group_by``."""
    start, end = parse_range(query.get("start"), query.get("end"))
    group_by = parse_group_by(query.get("group_by"))
    return await UsageService(deps).report(principal, start, end, group_by=group_by, origin=origin)


def admin_routes(runtime: Runtime) -> list[BaseRoute]:
    """Policy, blocklist, usage, budget and config under the mount, plus the node listing."""
    mount = runtime.spec.mount

    # ----- blocklist ---------------------------------------------------------------

    @api(
        "The tenant's text blocklist, newest first",
        permission=ADMIN,
        response=BlocklistList,
        query={"limit": "1 to 200 (default 50)", "cursor": "from the previous page"},
        tags=["admin"],
    )
    async def list_blocklist(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        limit = parse_limit(request.query_params.get("limit"))
        page = await BlocklistService(deps_of(runtime)).page(
            principal, limit=limit, cursor=request.query_params.get("cursor")
        )
        return listing(page.items, has_more=page.has_more, next_cursor=page.next_cursor)

    @api(
        "Add a blocklist entry",
        permission=ADMIN,
        body=BlocklistCreate,
        response=BlocklistEntryView,
        status=201,
        tags=["admin"],
    )
    async def create_blocklist_entry(request: Request) -> Response:
        deps = deps_of(runtime)
        async with audited_write(
            request,
            deps.audit,
            permission=ADMIN,
            action="scaispeak.blocklist.create",
            resource_type="blocklist_entry",
        ) as (principal, origin):
            body = await read_json(request, BlocklistCreate)
            if body.pattern is UNSET:
                raise validation_error("pattern", "is required")
            if body.match is UNSET:
                raise validation_error("match", "is required")
            entry = await BlocklistService(deps).create(
                principal,
                pattern=body.pattern,
                match=body.match,
                description=None if body.description is UNSET else body.description,
                origin=origin,
            )
        return success(entry, status_code=201)

    @api(
        "Remove a blocklist entry",
        permission=ADMIN,
        response=BlocklistDeleted,
        tags=["admin"],
    )
    async def delete_blocklist_entry(request: Request) -> Response:
        deps = deps_of(runtime)
        entry_id = request.path_params["entry_id"]
        async with audited_write(
            request,
            deps.audit,
            permission=ADMIN,
            action="scaispeak.blocklist.delete",
            resource_type="blocklist_entry",
            resource_id=entry_id,
        ) as (principal, origin):
            result = await BlocklistService(deps).delete(principal, entry_id, origin=origin)
        return success(result)

    # ----- config ------------------------------------------------------------------

    @api(
        "Limits and feature switches for clients",
        permission="any scaispeak permission",
        response=ConfigView,
        tags=["config"],
    )
    async def get_config(request: Request) -> Response:
        require_any_permission(principal_of(request))
        return success(config_view(deps_of(runtime).settings))

    blocklist = f"{mount}/admin/blocklist"
    return [
        *policy_routes(
            runtime,
            path=f"{mount}/admin/policy",
            deps=deps_of,
            service=PolicyService,
            body=PolicyPatch,
            view=PolicyView,
            read_permission=SYNTHESIZE,
            write_permission=ADMIN,
            read_summary="The tenant's backend policy and the backends' availability",
            tags=["admin"],
        ),
        Route(blocklist, list_blocklist, methods=["GET"]),
        Route(blocklist, create_blocklist_entry, methods=["POST"]),
        Route(f"{blocklist}/{{entry_id}}", delete_blocklist_entry, methods=["DELETE"]),
        usage_route(
            runtime,
            deps=deps_of,
            read=read_usage,
            view=UsageReport,
            permission=ADMIN,
            summary="Characters, requests and audio synthesised by the tenant",
            query={
                "start": "YYYY-MM-DD or RFC 3339; default: the start of the current month (UTC)",
                "end": "exclusive; default: the end of the current month (UTC)",
                "group_by": "user, voice, backend or day",
            },
        ),
        *budget_routes(
            runtime,
            deps=deps_of,
            service=BudgetService,
            body=BudgetPut,
            view=BudgetView,
            limit_field="chars_limit",
            permission=ADMIN,
            unit_words="character",
        ),
        Route(f"{mount}/config", get_config, methods=["GET"]),
        *node_listing_routes(runtime, (*NODE_PATHS, f"{mount}/admin/nodes"), permission=ADMIN),
    ]
