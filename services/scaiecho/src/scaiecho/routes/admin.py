"""Administration routes: ``GET /admin/dashboard`` and the node listing (scaiecho.md §10).

``/v1/admin/nodes`` and its alias ``/v1/infra/nodes`` sit outside the module mount.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import parse_bool
from scaicommon.envelope import listing, success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaiecho.deps import deps_of
from scaiecho.permissions import ADMIN
from scaiecho.services.admin import Dashboard, DashboardService, NodeList, NodeListing, Origin

NODE_PATHS = ("/v1/admin/nodes", "/v1/infra/nodes")


def origin_of(request: Request) -> Origin:
    """The caller's address and user agent, for audit rows."""
    client = request.client
    return Origin(
        ip_address=client.host if client else None,
        user_agent=request.headers.get("user-agent"),
    )


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

    @api(
        "Inference nodes and their health (scaiecho:admin or role super_admin)",
        permission=f"{ADMIN} or role super_admin",
        response=NodeList,
        query={
            "engine": "only nodes with this engine kind, e.g. audio.transcribe",
            "include_stale": "true (default) or false",
        },
        tags=["admin"],
    )
    async def nodes(request: Request) -> Response:
        principal = principal_of(request)
        if not principal.is_super_admin:
            principal.require(ADMIN)
        engine = request.query_params.get("engine") or None
        raw_stale = request.query_params.get("include_stale")
        include_stale = True if raw_stale is None else parse_bool("include_stale", raw_stale)
        items = await NodeListing(runtime).items(engine=engine, include_stale=include_stale)
        return listing(items)

    return [
        Route(f"{mount}/admin/dashboard", dashboard, methods=["GET"]),
        *(Route(path, nodes, methods=["GET"]) for path in NODE_PATHS),
    ]
