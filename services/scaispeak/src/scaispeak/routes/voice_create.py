"""``POST /voices`` (clone and design) and ``POST /voices/{voice_id}/repromote``
(scaispeak.md §7.4, §7.5, §7.10)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import DEFAULT_MAX_JSON_BYTES, read_json
from scaicommon.envelope import success
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaicommon.uploads import read_multipart
from scaispeak.permissions import VOICE_WRITE
from scaispeak.routes.voices import voice_write
from scaispeak.services.intake import CREATE_ACTION, REPROMOTE_ACTION, IntakeService
from scaispeak.services.voice_forms import DesignBody, parse_design_json, parse_voice_form
from scaispeak.store.voices import Voice


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "application/json"


def voice_create_routes(runtime: Runtime) -> list[BaseRoute]:
    """Voice creation and repromotion."""
    mount = runtime.spec.mount

    def location(voice: Voice) -> str:
        base = runtime.settings.public_base_url.rstrip("/")
        return f"{base}{mount}/voices/{voice.id}"

    @api(
        "Create a voice: clone from a reference and consent (multipart), or design from a"
        " description (multipart or JSON)",
        permission=VOICE_WRITE,
        body=DesignBody,
        multipart=True,
        status=201,
        tags=["voices"],
    )
    async def create_voice(request: Request) -> Response:
        async with voice_write(runtime, request, CREATE_ACTION, VOICE_WRITE) as write:
            principal, origin = write.principal, write.origin
            service = IntakeService(write.deps)
            principal.require_tenant()
            if _is_json(request):
                body = await read_json(request, DesignBody, max_bytes=DEFAULT_MAX_JSON_BYTES)
                voice = await service.create_design(
                    principal, parse_design_json(body), origin=origin
                )
            else:
                limit = write.deps.settings.max_upload_bytes
                async with await read_multipart(
                    request, max_bytes=2 * limit + DEFAULT_MAX_JSON_BYTES, max_file_bytes=limit
                ) as form:
                    parsed = parse_voice_form(form)
                    voice = await service.create(principal, parsed, origin=origin)
        return success(voice.to_api(), status_code=201, headers={"Location": location(voice)})

    @api(
        "Re-run intake on a voice's stored reference (legacy pending/processing/failed/evicted)",
        permission=VOICE_WRITE,
        tags=["voices"],
    )
    async def repromote(request: Request) -> Response:
        voice_id = str(request.path_params["voice_id"])
        async with voice_write(runtime, request, REPROMOTE_ACTION, VOICE_WRITE) as write:
            voice = await IntakeService(write.deps).repromote(
                write.principal, voice_id, origin=write.origin
            )
        return success(voice.to_api())

    return [
        Route(f"{mount}/voices", create_voice, methods=["POST"]),
        Route(f"{mount}/voices/{{voice_id}}/repromote", repromote, methods=["POST"]),
    ]
