"""The OpenAI-compatible routes under ``/v1/modules/scaispeak/v1`` (scaispeak.md §6).

Errors take OpenAI's shape automatically (the paths lie under ``<mount>/v1/``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import read_json
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.pagination import MAX_LIMIT
from scaicommon.runtime import Runtime
from scaispeak.deps import deps_of
from scaispeak.permissions import SYNTHESIZE, VOICE_READ
from scaispeak.services.speak import SpeakService, SpeechBody, speech_request
from scaispeak.store.voices import Voice, VoiceFilters


def openai_voice(voice: Voice) -> dict[str, object]:
    """One item of ``GET /v1/audio/voices`` (§6.2)."""
    return {
        "id": voice.id,
        "object": "voice",
        "name": voice.display_name,
        "scope": voice.scope,
        "kind": voice.kind,
        "language_primary": voice.language_primary,
        "language_supported": list(voice.language_supported),
        "gender_hint": voice.gender_hint,
    }


def openai_routes(runtime: Runtime) -> list[BaseRoute]:
    """``POST /v1/audio/speech`` and ``GET /v1/audio/voices`` in OpenAI's shapes."""
    base = f"{runtime.spec.mount}/v1"

    @api(
        "OpenAI-compatible speech (always synchronous, streamed as it is produced)",
        permission=SYNTHESIZE,
        body=SpeechBody,
        tags=["openai"],
    )
    async def speech(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        deps = deps_of(runtime)
        parsed = speech_request(await read_json(request, SpeechBody), deps.settings)
        stream = await SpeakService(deps).open_speech(principal, parsed)
        return StreamingResponse(
            stream.body(),
            media_type=stream.content_type,
            headers={"X-ScaiSpeak-Job-Id": stream.job.id, "X-ScaiSpeak-Backend": stream.backend},
        )

    @api("OpenAI-compatible list of the voices you can use", permission=VOICE_READ, tags=["openai"])
    async def voices(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(VOICE_READ)
        deps = deps_of(runtime)
        tenant_id = principal.require_tenant()
        filters = VoiceFilters(embedding_status="ready")
        items: list[Voice] = []
        cursor: str | None = None
        while True:
            page = await deps.voices.list_visible(
                tenant_id, principal.user_id, filters, limit=MAX_LIMIT, cursor=cursor
            )
            items += page.items
            if not page.has_more:
                break
            cursor = page.next_cursor
        await deps.audit.write(
            principal,
            action="scaispeak.voice.list",
            status="SUCCESS",
            resource_type="voice",
            resource_id=None,
            details={"count": len(items), "filters": {"embedding_status": "ready"}},
        )
        return JSONResponse({"object": "list", "data": [openai_voice(v) for v in items]})

    return [
        Route(f"{base}/audio/speech", speech, methods=["POST"]),
        Route(f"{base}/audio/voices", voices, methods=["GET"]),
    ]
