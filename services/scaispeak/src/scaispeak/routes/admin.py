"""Administration routes (scaispeak.md §2 ``/config`` and node listing, §12.1, §12.2, §12.5).

Policy, blocklist, usage and budget sit under the mount; the node listing is served at
``/v1/admin/nodes``, ``/v1/infra/nodes`` and ``<mount>/admin/nodes`` by the shared handler.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.adminaudit import audit_failures, origin_of
from scaicommon.bodies import RequestBody, read_json
from scaicommon.envelope import listing, success
from scaicommon.errors import ScaiError, validation_error
from scaicommon.middleware import principal_of
from scaicommon.nodelisting import node_listing_routes
from scaicommon.openapi import api
from scaicommon.pagination import parse_limit
from scaicommon.principal import Principal
from scaicommon.runtime import Runtime
from scaicommon.tenantadmin import BUDGET_PERIOD
from scaispeak.deps import deps_of
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


def admin_routes(runtime: Runtime) -> list[BaseRoute]:
    """Policy, blocklist, usage, budget and config under the mount, plus the node listing."""
    mount = runtime.spec.mount

    # ----- policy ------------------------------------------------------------------

    @api(
        "The tenant's backend policy and the backends' availability",
        permission=SYNTHESIZE,
        response=PolicyView,
        tags=["admin"],
    )
    async def get_policy(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        tenant_id = principal.require_tenant()
        return success(await PolicyService(deps_of(runtime)).get(tenant_id))

    @api(
        "Change allowed_backends and/or default_backend",
        permission=ADMIN,
        body=PolicyPatch,
        response=PolicyView,
        tags=["admin"],
    )
    async def patch_policy(request: Request) -> Response:
        principal = principal_of(request)
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.policy.update",
            resource_type="tenant_policy",
            resource_id=principal.tenant_id,
            origin=origin,
        ):
            principal.require(ADMIN)
            body = await read_json(request, PolicyPatch)
            view = await PolicyService(deps).update(
                principal,
                allowed_backends=None if body.allowed_backends is UNSET else body.allowed_backends,
                default_backend=None if body.default_backend is UNSET else body.default_backend,
                origin=origin,
            )
        return success(view)

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
        principal = principal_of(request)
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.blocklist.create",
            resource_type="blocklist_entry",
            origin=origin,
        ):
            principal.require(ADMIN)
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
        principal = principal_of(request)
        deps = deps_of(runtime)
        origin = origin_of(request)
        entry_id = request.path_params["entry_id"]
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.blocklist.delete",
            resource_type="blocklist_entry",
            resource_id=entry_id,
            origin=origin,
        ):
            principal.require(ADMIN)
            result = await BlocklistService(deps).delete(principal, entry_id, origin=origin)
        return success(result)

    # ----- usage and budget --------------------------------------------------------

    @api(
        "Characters, requests and audio synthesised by the tenant",
        permission=ADMIN,
        response=UsageReport,
        query={
            "start": "YYYY-MM-DD or RFC 3339; default: the start of the current month (UTC)",
            "end": "exclusive; default: the end of the current month (UTC)",
            "group_by": "user, voice, backend or day",
        },
        tags=["usage"],
    )
    async def get_usage(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        query = request.query_params
        start, end = parse_range(query.get("start"), query.get("end"))
        group_by = parse_group_by(query.get("group_by"))
        report = await UsageService(deps_of(runtime)).report(
            principal, start, end, group_by=group_by, origin=origin_of(request)
        )
        return success(report)

    @api(
        "The tenant's monthly character budget",
        permission=ADMIN,
        response=BudgetView,
        tags=["usage"],
    )
    async def get_budget(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        view = await BudgetService(deps_of(runtime)).read(principal, origin=origin_of(request))
        return success(view)

    @api(
        "Set the tenant's monthly character budget (null: unlimited)",
        permission=ADMIN,
        body=BudgetPut,
        response=BudgetView,
        tags=["usage"],
    )
    async def put_budget(request: Request) -> Response:
        principal = principal_of(request)
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.budget.update",
            resource_type="budget",
            origin=origin,
        ):
            principal.require(ADMIN)
            body = await read_json(request, BudgetPut)
            if body.period is UNSET:
                raise validation_error("period", "is required")
            if body.period != BUDGET_PERIOD:
                raise validation_error("period", f"must be {BUDGET_PERIOD!r}")
            if body.chars_limit is UNSET:
                raise validation_error(
                    "chars_limit", "is required (an integer >= 0, or null for unlimited)"
                )
            view = await BudgetService(deps).set(principal, body.chars_limit, origin=origin)
        return success(view)

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
    budget = f"{mount}/admin/budget"
    policy = f"{mount}/admin/policy"
    return [
        Route(policy, get_policy, methods=["GET"]),
        Route(policy, patch_policy, methods=["PATCH"]),
        Route(blocklist, list_blocklist, methods=["GET"]),
        Route(blocklist, create_blocklist_entry, methods=["POST"]),
        Route(f"{blocklist}/{{entry_id}}", delete_blocklist_entry, methods=["DELETE"]),
        Route(f"{mount}/usage", get_usage, methods=["GET"]),
        Route(budget, get_budget, methods=["GET"]),
        Route(budget, put_budget, methods=["PUT"]),
        Route(f"{mount}/config", get_config, methods=["GET"]),
        *node_listing_routes(runtime, (*NODE_PATHS, f"{mount}/admin/nodes"), permission=ADMIN),
    ]
