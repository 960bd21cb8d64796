"""``GET /usage`` and ``GET``/``PUT /admin/budget`` (scaiecho.md §9)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType
from starlette.datastructures import QueryParams
from starlette.routing import BaseRoute

from scaicommon.adminaudit import Origin
from scaicommon.bodies import RequestBody
from scaicommon.principal import Principal
from scaicommon.runtime import Runtime
from scaicommon.tenantroutes import budget_routes, usage_route
from scaiecho.deps import EchoDeps, deps_of
from scaiecho.permissions import ADMIN
from scaiecho.services.admin import (
    MAX_AUDIO_SECONDS_LIMIT,
    BudgetAdmin,
    BudgetView,
    UsageReport,
    UsageReporter,
    parse_month,
)

SecondsLimit = Annotated[int, msgspec.Meta(ge=0, le=MAX_AUDIO_SECONDS_LIMIT)]


class BudgetPut(RequestBody):
    """``PUT /admin/budget``: both fields required; ``null`` means unlimited."""

    period: Annotated[str, msgspec.Meta(description="must be 'month'")] | UnsetType = UNSET
    audio_seconds_limit: SecondsLimit | UnsetType | None = UNSET


async def read_usage(
    deps: EchoDeps, principal: Principal, query: QueryParams, origin: Origin
) -> UsageReport:
    """The report of the ``period`` month (default: the current one)."""
    month = parse_month(query.get("period"))
    return await UsageReporter(deps).report(principal, month, origin=origin)


def usage_routes(runtime: Runtime) -> list[BaseRoute]:
    """The usage and budget routes under the mount."""
    return [
        usage_route(
            runtime,
            deps=deps_of,
            read=read_usage,
            view=UsageReport,
            permission=ADMIN,
            summary="Audio milliseconds used by the tenant in a calendar month (UTC)",
            query={"period": "YYYY-MM (UTC); defaults to the current month"},
        ),
        *budget_routes(
            runtime,
            deps=deps_of,
            service=BudgetAdmin,
            body=BudgetPut,
            view=BudgetView,
            limit_field="audio_seconds_limit",
            permission=ADMIN,
            unit_words="audio",
        ),
    ]
