"""``GET``/``PATCH /tenant-policy`` (scaiecho.md §3.2)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import RequestBody, read_json
from scaicommon.envelope import success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaiecho.deps import deps_of
from scaiecho.permissions import ADMIN
from scaiecho.routes.admin import origin_of
from scaiecho.services.admin import PolicyAdmin, PolicyView, audit_failures


class PolicyPatch(RequestBody):
    """``PATCH /tenant-policy``: at least one field; merged into the stored policy."""

    allowed_backends: (
        Annotated[str, msgspec.Meta(description="'A', 'B', 'AB' or 'BA'")] | UnsetType
    ) = UNSET
    default_backend: Annotated[str, msgspec.Meta(description="'A' or 'B'")] | UnsetType = UNSET


def policy_routes(runtime: Runtime) -> list[BaseRoute]:
    """The tenant-policy routes under the mount."""
    path = f"{runtime.spec.mount}/tenant-policy"

    @api(
        "The tenant's backend policy (provisioned on first read)",
        permission=ADMIN,
        response=PolicyView,
        tags=["policy"],
    )
    async def get_policy(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        tenant_id = principal.require_tenant()
        return success(await PolicyAdmin(deps_of(runtime)).get(tenant_id))

    @api(
        "Change allowed_backends and/or default_backend",
        permission=ADMIN,
        body=PolicyPatch,
        response=PolicyView,
        tags=["policy"],
    )
    async def patch_policy(request: Request) -> Response:
        principal = principal_of(request)
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaiecho.policy.update",
            resource_type="tenant_policy",
            resource_id=principal.tenant_id,
            origin=origin,
        ):
            principal.require(ADMIN)
            body = await read_json(request, PolicyPatch)
            view = await PolicyAdmin(deps).update(
                principal,
                allowed_backends=None if body.allowed_backends is UNSET else body.allowed_backends,
                default_backend=None if body.default_backend is UNSET else body.default_backend,
                origin=origin,
            )
        return success(view)

    return [
        Route(path, get_policy, methods=["GET"]),
        Route(path, patch_policy, methods=["PATCH"]),
    ]
