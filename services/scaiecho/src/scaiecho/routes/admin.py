"""Administration routes: ``GET /admin/dashboard`` and the node listing (scaiecho.md §10).

``/v1/admin/nodes`` and its alias ``/v1/infra/nodes`` sit outside the module mount; their
handler is the shared one of :mod:`scaicommon.nodelisting`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.envelope import success
from scaicommon.middleware import principal_of
from scaicommon.nodelisting import node_listing_routes
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaiecho.deps import deps_of
from scaiecho.permissions import ADMIN
from scaiecho.services.admin import Dashboard, DashboardService

__all__ = ["NODE_PATHS", "admin_routes"]

NODE_PATHS = ("/v1/admin/nodes", "/v1/infra/nodes")


def admin_routes(runtime: Runtime) -> list[BaseRoute]:
    """The dashboard under the mount and the node listing at both full paths."""
    mount = runtime.spec.mount

    @api(
        "Queue, workers, the tenant's jobs over 24 h, and node health",
        permission=ADMIN,
        response=Dashboard,
        tags=["admin"],
    )
    async def dashboard(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        tenant_id = principal.require_tenant()
        return success(await DashboardService(deps_of(runtime)).build(tenant_id))

    return [
        Route(f"{mount}/admin/dashboard", dashboard, methods=["GET"]),
        *node_listing_routes(runtime, NODE_PATHS, permission=ADMIN),
    ]
