"""``GET /usage`` and ``GET``/``PUT /admin/budget`` (scaiecho.md §9)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import RequestBody, read_json
from scaicommon.envelope import success
from scaicommon.errors import validation_error
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaiecho.deps import deps_of
from scaiecho.permissions import ADMIN
from scaiecho.routes.admin import origin_of
from scaiecho.services.admin import (
    BUDGET_PERIOD,
    MAX_AUDIO_SECONDS_LIMIT,
    BudgetAdmin,
    BudgetView,
    UsageReport,
    UsageReporter,
    audit_failures,
    parse_month,
)

SecondsLimit = Annotated[int, msgspec.Meta(ge=0, le=MAX_AUDIO_SECONDS_LIMIT)]


class BudgetPut(RequestBody):
    """``PUT /admin/budget``: both fields required; ``null`` means unlimited."""

    period: Annotated[str, msgspec.Meta(description="must be 'month'")] | UnsetType = UNSET
    audio_seconds_limit: SecondsLimit | UnsetType | None = UNSET


def usage_routes(runtime: Runtime) -> list[BaseRoute]:
    """The usage and budget routes under the mount."""
    mount = runtime.spec.mount

    @api(
        "Audio milliseconds used by the tenant in a calendar month (UTC)",
        permission=ADMIN,
        response=UsageReport,
        query={"period": "YYYY-MM (UTC); defaults to the current month"},
        tags=["usage"],
    )
    async def get_usage(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        month = parse_month(request.query_params.get("period"))
        report = await UsageReporter(deps_of(runtime)).report(
            principal, month, origin=origin_of(request)
        )
        return success(report)

    @api("The tenant's monthly audio budget", permission=ADMIN, response=BudgetView, tags=["usage"])
    async def get_budget(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(ADMIN)
        view = await BudgetAdmin(deps_of(runtime)).read(principal, origin=origin_of(request))
        return success(view)

    @api(
        "Set the tenant's monthly audio budget (null: unlimited)",
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
            action="scaiecho.budget.update",
            resource_type="budget",
            origin=origin,
        ):
            principal.require(ADMIN)
            body = await read_json(request, BudgetPut)
            if body.period is UNSET:
                raise validation_error("period", "is required")
            if body.period != BUDGET_PERIOD:
                raise validation_error("period", f"must be {BUDGET_PERIOD!r}")
            if body.audio_seconds_limit is UNSET:
                raise validation_error(
                    "audio_seconds_limit", "is required (an integer >= 0, or null for unlimited)"
                )
            view = await BudgetAdmin(deps).set(principal, body.audio_seconds_limit, origin=origin)
        return success(view)

    budget = f"{mount}/admin/budget"
    return [
        Route(f"{mount}/usage", get_usage, methods=["GET"]),
        Route(budget, get_budget, methods=["GET"]),
        Route(budget, put_budget, methods=["PUT"]),
    ]
