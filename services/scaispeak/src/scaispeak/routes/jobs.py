"""``/speak/jobs`` (scaispeak.md §5.2–§5.5): owner-only job reads, audio and delete."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from scaicommon.envelope import listing, success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.pagination import parse_limit
from scaicommon.runtime import Runtime
from scaispeak.deps import deps_of
from scaispeak.permissions import SYNTHESIZE
from scaispeak.services.synth_jobs import SynthJobService


def synth_job_routes(runtime: Runtime) -> list[BaseRoute]:
    """List, get, download and delete the caller's synthesis jobs."""
    mount = runtime.spec.mount

    @api(
        "List your synthesis jobs, newest first",
        permission=SYNTHESIZE,
        query={
            "status": "queued | running | completed | failed",
            "limit": "1-200, default 50",
            "cursor": "opaque",
        },
        tags=["jobs"],
    )
    async def list_jobs(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        query = request.query_params
        page = await SynthJobService(deps_of(runtime)).list(
            principal,
            status=query.get("status"),
            limit=parse_limit(query.get("limit")),
            cursor=query.get("cursor"),
        )
        return listing(page.items, has_more=page.has_more, next_cursor=page.next_cursor)

    @api("Get one of your synthesis jobs", permission=SYNTHESIZE, tags=["jobs"])
    async def get_job(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        job_id = request.path_params["job_id"]
        return success(await SynthJobService(deps_of(runtime)).get(principal, job_id))

    @api("Download a job's audio", permission=SYNTHESIZE, tags=["jobs"])
    async def job_audio(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        directory = Path(tempfile.mkdtemp(prefix="scaispeak-audio-"))
        try:
            audio = await SynthJobService(deps_of(runtime)).audio(
                principal, request.path_params["job_id"], directory
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return FileResponse(
            audio.path,
            media_type=audio.content_type,
            filename=audio.filename,
            background=BackgroundTask(shutil.rmtree, directory, ignore_errors=True),
        )

    @api("Delete a job with its text and audio", permission=SYNTHESIZE, tags=["jobs"])
    async def delete_job(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        job_id = request.path_params["job_id"]
        return success(await SynthJobService(deps_of(runtime)).delete(principal, job_id))

    return [
        Route(f"{mount}/speak/jobs", list_jobs, methods=["GET"]),
        Route(f"{mount}/speak/jobs/{{job_id}}", get_job, methods=["GET"]),
        Route(f"{mount}/speak/jobs/{{job_id}}", delete_job, methods=["DELETE"]),
        Route(f"{mount}/speak/jobs/{{job_id}}/audio", job_audio, methods=["GET"]),
    ]
