"""HTTP routes of the tenant administration both services share: policy, usage and budget.

Each service hands in its own shapes (request bodies, response views), permissions, paths and
the service objects that do the work; the handlers (authorisation, validation, the ``FAILURE``
audit rows of writes, the envelopes) are these. The success rows are written by the services
(:mod:`scaicommon.tenantadmin`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from msgspec import UNSET
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.adminaudit import Origin, audited_write, origin_of
from scaicommon.bodies import RequestBody, read_json
from scaicommon.envelope import success
from scaicommon.errors import validation_error
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.principal import Principal
from scaicommon.runtime import Runtime
from scaicommon.servicedeps import ServiceDeps
from scaicommon.tenantadmin import BUDGET_PERIOD

D = TypeVar("D", bound=ServiceDeps)
B = TypeVar("B", bound=RequestBody)

#: ``GET /usage``: the report for the caller's query string (parsing is the service's own).
UsageReader = Callable[[D, Principal, QueryParams, Origin], Awaitable[Any]]


class PolicyEndpoint(Protocol):
    """What the policy routes call: a module's policy service."""

    async def get(self, tenant_id: str, /) -> Any:
        """The tenant's policy view, provisioned on first read."""

    async def update(
        self,
        principal: Principal,
        /,
        *,
        allowed_backends: Any,
        default_backend: str | None,
        origin: Origin | None = None,
    ) -> Any:
        """Merge the given fields (``None``: unchanged) and audit the change."""


class BudgetEndpoint(Protocol):
    """What the budget routes call: a module's budget service."""

    async def read(self, principal: Principal, /, *, origin: Origin | None = None) -> Any:
        """The caller's tenant's budget view (audited as a read)."""

    async def set(
        self, principal: Principal, limit: int | None, /, *, origin: Origin | None = None
    ) -> Any:
        """Store the monthly limit (``None``: unlimited) and audit it."""


def policy_routes(
    runtime: Runtime,
    *,
    path: str,
    deps: Callable[[Runtime], D],
    service: Callable[[D], PolicyEndpoint],
    body: type[RequestBody],
    view: type,
    read_permission: str,
    write_permission: str,
    read_summary: str,
    tags: Sequence[str],
) -> list[BaseRoute]:
    """``GET`` and ``PATCH`` of the tenant's backend policy at ``path``.

    ``body`` has the optional fields ``allowed_backends`` and ``default_backend`` (in the
    module's form); the change is audited as ``<module>.policy.update``.
    """
    action = f"{runtime.spec.module}.policy.update"

    @api(read_summary, permission=read_permission, response=view, tags=tags)
    async def get_policy(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(read_permission)
        tenant_id = principal.require_tenant()
        return success(await service(deps(runtime)).get(tenant_id))

    @api(
        "Change allowed_backends and/or default_backend",
        permission=write_permission,
        body=body,
        response=view,
        tags=tags,
    )
    async def patch_policy(request: Request) -> Response:
        context = deps(runtime)
        async with audited_write(
            request,
            context.audit,
            permission=write_permission,
            action=action,
            resource_type="tenant_policy",
            resource_id=principal_of(request).tenant_id,
        ) as (principal, origin):
            patch = await read_json(request, body)
            allowed = getattr(patch, "allowed_backends", UNSET)
            default = getattr(patch, "default_backend", UNSET)
            result = await service(context).update(
                principal,
                allowed_backends=None if allowed is UNSET else allowed,
                default_backend=None if default is UNSET else default,
                origin=origin,
            )
        return success(result)

    return [
        Route(path, get_policy, methods=["GET"]),
        Route(path, patch_policy, methods=["PATCH"]),
    ]


def usage_route(
    runtime: Runtime,
    *,
    deps: Callable[[Runtime], D],
    read: UsageReader[D],
    view: type,
    permission: str,
    summary: str,
    query: dict[str, str],
) -> BaseRoute:
    """``GET <mount>/usage``: ``read`` builds the report (and audits the read)."""

    @api(summary, permission=permission, response=view, query=query, tags=["usage"])
    async def get_usage(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(permission)
        report = await read(deps(runtime), principal, request.query_params, origin_of(request))
        return success(report)

    return Route(f"{runtime.spec.mount}/usage", get_usage, methods=["GET"])


def budget_routes(
    runtime: Runtime,
    *,
    deps: Callable[[Runtime], D],
    service: Callable[[D], BudgetEndpoint],
    body: type[RequestBody],
    view: type,
    limit_field: str,
    permission: str,
    unit_words: str,
) -> list[BaseRoute]:
    """``GET`` and ``PUT <mount>/admin/budget``: the tenant's monthly ``unit_words`` budget.

    ``body`` has ``period`` and ``limit_field``; both are required (``null`` limit: unlimited).
    The change is audited as ``<module>.budget.update``.
    """
    action = f"{runtime.spec.module}.budget.update"

    @api(
        f"The tenant's monthly {unit_words} budget",
        permission=permission,
        response=view,
        tags=["usage"],
    )
    async def get_budget(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(permission)
        result = await service(deps(runtime)).read(principal, origin=origin_of(request))
        return success(result)

    @api(
        f"Set the tenant's monthly {unit_words} budget (null: unlimited)",
        permission=permission,
        body=body,
        response=view,
        tags=["usage"],
    )
    async def put_budget(request: Request) -> Response:
        context = deps(runtime)
        async with audited_write(
            request, context.audit, permission=permission, action=action, resource_type="budget"
        ) as (principal, origin):
            put = await read_json(request, body)
            period = getattr(put, "period", UNSET)
            if period is UNSET:
                raise validation_error("period", "is required")
            if period != BUDGET_PERIOD:
                raise validation_error("period", f"must be {BUDGET_PERIOD!r}")
            limit = getattr(put, limit_field, UNSET)
            if limit is UNSET:
                raise validation_error(
                    limit_field, "is required (an integer >= 0, or null for unlimited)"
                )
            result = await service(context).set(principal, limit, origin=origin)
        return success(result)

    path = f"{runtime.spec.mount}/admin/budget"
    return [
        Route(path, get_budget, methods=["GET"]),
        Route(path, put_budget, methods=["PUT"]),
    ]
