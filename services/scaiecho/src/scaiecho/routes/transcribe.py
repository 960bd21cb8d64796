"""``POST /transcribe`` (scaiecho.md §4)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.envelope import success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaicommon.uploads import read_multipart
from scaiecho.forms import parse_transcribe_form, wants_diarization
from scaiecho.permissions import DIARIZE, TRANSCRIBE
from scaiecho.services.registry import services_of
from scaiecho.services.transcribe import ASYNC_NOTE, Completed, Submission


def transcribe_routes(runtime: Runtime) -> list[BaseRoute]:
    """The batch transcription route."""
    mount = runtime.spec.mount

    @api(
        "Transcribe an uploaded file (inline up to the threshold, else an async job)",
        permission=TRANSCRIBE,
        multipart=True,
        tags=["transcription"],
    )
    async def transcribe(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(TRANSCRIBE)
        services = services_of(runtime)
        settings = services.deps.settings
        async with await read_multipart(request, max_bytes=settings.max_upload_bytes) as form:
            if wants_diarization(form):
                principal.require(DIARIZE)
            parsed = parse_transcribe_form(form)
            outcome = await services.transcribe.submit(
                principal,
                Submission(parsed.upload, parsed.options, force_async=parsed.force_async),
            )
        job = outcome.job
        if isinstance(outcome, Completed):
            transcript = outcome.transcript
            return success(
                {
                    "job_id": job.id,
                    "transcript": transcript.text,
                    "segments": transcript.api_segments(parsed.options.timestamps, diarized=False),
                    "backend_used": transcript.backend,
                    "language_detected": job.language_detected,
                    "audio_duration_ms": transcript.duration_ms,
                    "audio_bytes": job.audio_bytes,
                }
            )
        return success(
            {
                "job_id": job.id,
                "status": job.status,
                "audio_bytes": job.audio_bytes,
                "note": ASYNC_NOTE,
            },
            status_code=202,
            headers={"Location": f"{mount}/transcribe/jobs/{job.id}"},
        )

    return [Route(f"{mount}/transcribe", transcribe, methods=["POST"])]
