"""The voice library routes (scaispeak.md §7.2, §7.3, §7.7–7.9, §7.11, §7.12).

``GET /voices``, ``GET``/``PATCH``/``DELETE /voices/{voice_id}``, ``POST /voices/{id}/share``,
``GET``/``POST /voices/{id}/warm`` and ``POST /voices/{id}/evict``. Creation, repromote and
preview live in their own modules. Every mutation is audited, failures included.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import read_json
from scaicommon.envelope import listing, success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.pagination import parse_limit
from scaicommon.runtime import Runtime
from scaispeak.deps import deps_of
from scaispeak.permissions import VOICE_READ, VOICE_SHARE, VOICE_WRITE
from scaispeak.services.erasure import ErasureService
from scaispeak.services.voices import (
    Origin,
    VoicePatch,
    VoiceService,
    audit_failures,
    parse_filters,
)


def origin_of(request: Request) -> Origin:
    """The caller's address and user agent, for audit rows."""
    client = request.client
    return Origin(
        ip_address=client.host if client else None,
        user_agent=request.headers.get("user-agent"),
    )


def voice_routes(runtime: Runtime) -> list[BaseRoute]:
    """The library routes under the mount."""
    mount = runtime.spec.mount

    @api(
        "Every voice you can see: your voices, then tenant voices, then global voices",
        permission=VOICE_READ,
        query={
            "language": "ISO 639-1; matches language_primary or language_supported",
            "scope": "global | tenant | user",
            "gender": "female | male | neutral | unspecified",
            "embedding_status": "pending | processing | ready | failed | evicted",
            "q": "case-insensitive substring of the name, description or a style tag",
            "limit": "1-200, default 50",
            "cursor": "opaque",
        },
        tags=["voices"],
    )
    async def list_voices(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(VOICE_READ)
        query = request.query_params
        filters = parse_filters(query)
        page = await VoiceService(deps_of(runtime)).list(
            principal,
            filters,
            limit=parse_limit(query.get("limit")),
            cursor=query.get("cursor"),
        )
        return listing(
            [voice.to_api() for voice in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    @api("One voice you can see", permission=VOICE_READ, tags=["voices"])
    async def get_voice(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(VOICE_READ)
        voice = await VoiceService(deps_of(runtime)).get(
            principal, request.path_params["voice_id"], origin_of(request)
        )
        return success(voice.to_api())

    @api(
        "Change a voice's metadata and defaults (owner, tenant admin or super admin)",
        permission=VOICE_WRITE,
        body=VoicePatch,
        tags=["voices"],
    )
    async def patch_voice(request: Request) -> Response:
        principal = principal_of(request)
        voice_id = request.path_params["voice_id"]
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.voice.update",
            resource_id=voice_id,
            origin=origin,
        ):
            principal.require(VOICE_WRITE)
            body = await read_json(request, VoicePatch)
            voice = await VoiceService(deps).patch(principal, voice_id, body, origin)
        return success(voice.to_api())

    @api(
        "Erase a voice: tombstone, purge its audio, evict it from every node",
        permission=VOICE_WRITE,
        tags=["voices"],
    )
    async def delete_voice(request: Request) -> Response:
        principal = principal_of(request)
        voice_id = request.path_params["voice_id"]
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.voice.delete",
            resource_id=voice_id,
            origin=origin,
        ):
            principal.require(VOICE_WRITE)
            result = await ErasureService(deps).delete_voice(principal, voice_id, origin)
        return success(result)

    @api("Share your voice with your tenant", permission=VOICE_SHARE, tags=["voices"])
    async def share_voice(request: Request) -> Response:
        principal = principal_of(request)
        voice_id = request.path_params["voice_id"]
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.voice.share",
            resource_id=voice_id,
            origin=origin,
        ):
            principal.require(VOICE_SHARE)
            voice = await VoiceService(deps).share(principal, voice_id, origin)
        return success(voice.to_api())

    @api("Nodes that recently synthesised the voice", permission=VOICE_READ, tags=["voices"])
    async def warm_state(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(VOICE_READ)
        data = await VoiceService(deps_of(runtime)).warm_nodes(
            principal, request.path_params["voice_id"]
        )
        return success(data)

    @api("Legacy warming: a no-op for ready voices", permission=VOICE_WRITE, tags=["voices"])
    async def warm_voice(request: Request) -> Response:
        principal = principal_of(request)
        voice_id = request.path_params["voice_id"]
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.voice.warm",
            resource_id=voice_id,
            origin=origin,
        ):
            principal.require(VOICE_WRITE)
            data = await VoiceService(deps).warm(principal, voice_id, origin)
        return success(data)

    @api(
        "Evict the voice from node caches again (also after its deletion)",
        permission=VOICE_WRITE,
        tags=["voices"],
    )
    async def evict_voice(request: Request) -> Response:
        principal = principal_of(request)
        voice_id = request.path_params["voice_id"]
        deps = deps_of(runtime)
        origin = origin_of(request)
        async with audit_failures(
            deps.audit,
            principal,
            action="scaispeak.voice.evict",
            resource_id=voice_id,
            origin=origin,
        ):
            principal.require(VOICE_WRITE)
            data = await ErasureService(deps).evict(principal, voice_id, origin)
        return success(data)

    one = f"{mount}/voices/{{voice_id}}"
    return [
        Route(f"{mount}/voices", list_voices, methods=["GET"]),
        Route(one, get_voice, methods=["GET"]),
        Route(one, patch_voice, methods=["PATCH"]),
        Route(one, delete_voice, methods=["DELETE"]),
        Route(f"{one}/share", share_voice, methods=["POST"]),
        Route(f"{one}/warm", warm_state, methods=["GET"]),
        Route(f"{one}/warm", warm_voice, methods=["POST"]),
        Route(f"{one}/evict", evict_voice, methods=["POST"]),
    ]
