"""``/transcribe/jobs`` (scaiecho.md §5.1): owner-only job reads, cancel and delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.envelope import listing, success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.pagination import parse_limit
from scaicommon.runtime import Runtime
from scaiecho.permissions import TRANSCRIBE
from scaiecho.services.registry import services_of


def job_routes(runtime: Runtime) -> list[BaseRoute]:
    """List, get and delete the caller's transcription jobs."""
    mount = runtime.spec.mount

    @api(
        "List your transcription jobs, newest first",
        permission=TRANSCRIBE,
        query={"limit": "1-200, default 50", "cursor": "opaque", "status": "a job status"},
        tags=["jobs"],
    )
    async def list_jobs(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(TRANSCRIBE)
        query = request.query_params
        page = await services_of(runtime).jobs.list(
            principal,
            status=query.get("status"),
            limit=parse_limit(query.get("limit")),
            cursor=query.get("cursor"),
        )
        return listing(
            [job.to_api(with_result=False) for job in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    @api("Get one of your jobs", permission=TRANSCRIBE, tags=["jobs"])
    async def get_job(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(TRANSCRIBE)
        job = await services_of(runtime).jobs.get(principal, request.path_params["job_id"])
        return success(job.to_api())

    @api("Cancel a queued job or delete a finished one", permission=TRANSCRIBE, tags=["jobs"])
    async def delete_job(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(TRANSCRIBE)
        result = await services_of(runtime).jobs.delete(principal, request.path_params["job_id"])
        return success(result)

    return [
        Route(f"{mount}/transcribe/jobs", list_jobs, methods=["GET"]),
        Route(f"{mount}/transcribe/jobs/{{job_id}}", get_job, methods=["GET"]),
        Route(f"{mount}/transcribe/jobs/{{job_id}}", delete_job, methods=["DELETE"]),
    ]
