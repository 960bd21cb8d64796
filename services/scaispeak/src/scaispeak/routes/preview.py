"""``POST /voices/{voice_id}/preview`` (scaispeak.md §7.13): JSON, multipart or URL-encoded."""

from __future__ import annotations

import base64

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import read_json
from scaicommon.envelope import msgspec_error_to_validation, success
from scaicommon.errors import ScaiError
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaicommon.uploads import read_multipart
from scaispeak.deps import deps_of
from scaispeak.permissions import VOICE_READ
from scaispeak.services.speak import PreviewBody, SpeakService, preview_request

_FORM_FIELDS = ("text", "response_format", "backend_preference", "language_hint")
#: Preview forms carry a few short fields; anything larger is not a preview.
_MAX_FORM_BYTES = 64 * 1024


def _from_form(fields: dict[str, str]) -> PreviewBody:
    """The body from form fields (unknown fields ignored, §1.3)."""
    known = {k: v for k, v in fields.items() if k in _FORM_FIELDS}
    try:
        return msgspec.convert(known, PreviewBody)
    except msgspec.ValidationError as exc:
        raise msgspec_error_to_validation(exc) from None


async def read_preview_body(request: Request) -> PreviewBody:
    """The preview body from JSON, ``multipart/form-data`` or a URL-encoded form; no body at
    all means every default."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        return await read_json(request, PreviewBody)
    if media == "multipart/form-data":
        async with await read_multipart(request, max_bytes=_MAX_FORM_BYTES) as form:
            return _from_form(dict(form.fields))
    if media == "application/x-www-form-urlencoded":
        fields = await request.form()
        return _from_form({k: v for k, v in fields.items() if isinstance(v, str)})
    if not media and not await request.body():
        return PreviewBody()
    raise ScaiError(
        "UNSUPPORTED_MEDIA_TYPE",
        "send JSON, multipart/form-data or application/x-www-form-urlencoded",
        details=[{"field": "Content-Type", "message": f"got {media or 'nothing'}"}],
    )


def preview_routes(runtime: Runtime) -> list[BaseRoute]:
    """The voice preview route."""
    mount = runtime.spec.mount

    @api(
        "Hear a voice: a short text, or a built-in sentence in the voice's language",
        permission=VOICE_READ,
        body=PreviewBody,
        tags=["voices"],
    )
    async def preview(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(VOICE_READ)
        deps = deps_of(runtime)
        parsed = preview_request(await read_preview_body(request), deps.settings)
        result = await SpeakService(deps).preview(
            principal,
            request.path_params["voice_id"],
            text=parsed.text,
            response_format=parsed.response_format,
            preference=parsed.preference,
            language_hint=parsed.language_hint,
        )
        return success(
            {
                "audio_base64": base64.b64encode(result.audio.data).decode("ascii"),
                "response_format": result.response_format,
                "sample_rate": result.audio.sample_rate,
                "backend_used": result.backend,
                "chars": result.chars,
            }
        )

    return [Route(f"{mount}/voices/{{voice_id}}/preview", preview, methods=["POST"])]
