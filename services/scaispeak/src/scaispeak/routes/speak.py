"""``POST /speak`` (scaispeak.md §4): inline JSON or raw audio, or a 202 async job."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import read_json
from scaicommon.envelope import success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaispeak.deps import deps_of
from scaispeak.permissions import SYNTHESIZE
from scaispeak.services.speak import Inline, SpeakBody, SpeakService, speak_request


def _media_ranges(accept: str) -> list[tuple[float, int, str]]:
    """``(q, -position, media range)`` of each range in an ``Accept`` header."""
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((q, -position, media.lower()))
    return ranges


def wants_raw_audio(accept: str | None) -> bool:
    """Whether the ``Accept`` header's most preferred range is ``audio/*`` or ``audio/…``
    (ties go to the range listed first)."""
    ranges = [r for r in _media_ranges(accept or "") if r[0] > 0]
    return bool(ranges) and max(ranges)[2].startswith("audio/")


def job_location(runtime: Runtime, job_id: str) -> str:
    """The job's URL: absolute under ``SCAISPEAK_PUBLIC_BASE_URL`` when set, else relative."""
    path = f"{runtime.spec.mount}/speak/jobs/{job_id}"
    return runtime.settings.public_base_url.rstrip("/") + path


def async_note(runtime: Runtime, job_id: str, threshold: int, *, forced: bool) -> str:
    """The §4.5 note of a 202 answer."""
    poll = f"Poll GET {runtime.spec.mount}/speak/jobs/{job_id}."
    if forced:
        return f"The job runs asynchronously because force_async was set. {poll}"
    return f"Text is longer than the inline limit of {threshold} characters. {poll}"


def inline_response(outcome: Inline, *, raw: bool) -> Response:
    """The §4.3 JSON envelope, or the §4.4 raw body with its headers."""
    job, audio = outcome.job, outcome.audio
    if raw:
        headers = {
            "X-ScaiSpeak-Job-Id": job.id,
            "X-ScaiSpeak-Backend": outcome.backend,
            "X-ScaiSpeak-Sample-Rate": str(audio.sample_rate),
            "X-ScaiSpeak-Chars": str(job.chars),
            "X-ScaiSpeak-Audio-Duration-Ms": str(audio.duration_ms),
        }
        if outcome.saved_to and outcome.saved_to.get("file_id"):
            headers["X-ScaiSpeak-Saved-File-Id"] = str(outcome.saved_to["file_id"])
        return Response(audio.data, media_type=audio.content_type, headers=headers)
    return success(
        {
            "job_id": job.id,
            "audio_base64": base64.b64encode(audio.data).decode("ascii"),
            "response_format": job.response_format,
            "sample_rate": audio.sample_rate,
            "voice_id": job.voice_id,
            "backend_used": outcome.backend,
            "chars": job.chars,
            "audio_duration_ms": audio.duration_ms,
            "saved_to": outcome.saved_to,
        }
    )


def speak_routes(runtime: Runtime) -> list[BaseRoute]:
    """The one-shot synthesis route."""
    mount = runtime.spec.mount

    @api(
        "Synthesise text: inline (JSON or raw audio per Accept) or as an async job",
        permission=SYNTHESIZE,
        body=SpeakBody,
        tags=["synthesis"],
    )
    async def speak(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        deps = deps_of(runtime)
        body = await read_json(request, SpeakBody)
        parsed = speak_request(body, deps.settings)
        outcome = await SpeakService(deps).speak(principal, parsed)
        if isinstance(outcome, Inline):
            return inline_response(outcome, raw=wants_raw_audio(request.headers.get("accept")))
        job = outcome.job
        threshold = deps.settings.async_threshold_chars
        forced = job.chars <= threshold
        return success(
            {
                "job_id": job.id,
                "status": job.status,
                "chars": job.chars,
                "note": async_note(runtime, job.id, threshold, forced=forced),
            },
            status_code=202,
            headers={"Location": job_location(runtime, job.id)},
        )

    return [Route(f"{mount}/speak", speak, methods=["POST"])]
