"""The OpenAI-compatible routes under ``/v1/modules/scaiecho/v1`` (scaiecho.md §11)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaicommon.uploads import read_multipart
from scaiecho.forms import parse_openai_form
from scaiecho.openai_format import models_body, render
from scaiecho.permissions import TRANSCRIBE
from scaiecho.services.registry import services_of
from scaiecho.services.transcribe import Completed, Submission


def openai_routes(runtime: Runtime) -> list[BaseRoute]:
    """``POST /v1/audio/transcriptions`` and ``GET /v1/models`` in OpenAI's shapes."""
    base = f"{runtime.spec.mount}/v1"

    @api(
        "OpenAI-compatible transcription (always synchronous)",
        permission=TRANSCRIBE,
        multipart=True,
        tags=["openai"],
    )
    async def transcriptions(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(TRANSCRIBE)
        services = services_of(runtime)
        settings = services.deps.settings
        async with await read_multipart(request, max_bytes=settings.max_upload_bytes) as form:
            parsed = parse_openai_form(form)
            outcome = await services.transcribe.submit(
                principal,
                Submission(parsed.upload, parsed.options, source="openai", allow_async=False),
            )
        assert isinstance(outcome, Completed)
        body, media_type = render(
            outcome.transcript,
            parsed.response_format,
            words=parsed.word_timestamps,
            temperature=parsed.options.temperature or 0.0,
        )
        return Response(body, media_type=media_type)

    @api("OpenAI-compatible model list", permission=TRANSCRIBE, tags=["openai"])
    async def models(request: Request) -> Response:
        principal_of(request).require(TRANSCRIBE)
        return JSONResponse(models_body())

    return [
        Route(f"{base}/audio/transcriptions", transcriptions, methods=["POST"]),
        Route(f"{base}/models", models, methods=["GET"]),
    ]
