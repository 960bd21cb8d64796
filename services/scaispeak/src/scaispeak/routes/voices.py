"""The voice library routes (scaispeak.md §7.2, §7.3, §7.7–7.9, §7.11, §7.12).

``GET /voices``, ``GET``/``PATCH``/``DELETE /voices/{voice_id}``, ``POST /voices/{id}/share``,
``GET``/``POST /voices/{id}/warm`` and ``POST /voices/{id}/evict``. Creation, repromote and
preview live in their own modules. Every mutation is audited, failures included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.adminaudit import Origin, audit_failures, origin_of
from scaicommon.bodies import read_json
from scaicommon.envelope import listing, success
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.pagination import parse_limit
from scaicommon.principal import Principal
from scaicommon.runtime import Runtime
from scaispeak.deps import SpeakDeps, deps_of
from scaispeak.permissions import VOICE_READ, VOICE_SHARE, VOICE_WRITE
from scaispeak.services.erasure import ErasureService
from scaispeak.services.voices import VoicePatch, VoiceService, parse_filters


@dataclass(frozen=True)
class VoiceWrite:
    """What an audited voice write needs: the caller, the service's dependencies, the origin."""

    principal: Principal
    deps: SpeakDeps
    origin: Origin


@asynccontextmanager
async def voice_write(
    runtime: Runtime,
    request: Request,
    action: str,
    permission: str | None = None,
) -> AsyncIterator[VoiceWrite]:
    """Run a voice write whose failures are audited, ``permission`` (when given) first.

    The audit rows name the ``voice_id`` of the path, where it has one.
    """
    principal = principal_of(request)
    deps = deps_of(runtime)
    origin = origin_of(request)
    async with audit_failures(
        deps.audit,
        principal,
        action=action,
        resource_type="voice",
        resource_id=request.path_params.get("voice_id"),
        origin=origin,
    ):
        if permission is not None:
            principal.require(permission)
        yield VoiceWrite(principal, deps, origin)


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
        voice_id = request.path_params["voice_id"]
        async with voice_write(runtime, request, "scaispeak.voice.update", VOICE_WRITE) as write:
            body = await read_json(request, VoicePatch)
            voice = await VoiceService(write.deps).patch(
                write.principal, voice_id, body, write.origin
            )
        return success(voice.to_api())

    @api(
        "Erase a voice: tombstone, purge its audio, evict it from every node",
        permission=VOICE_WRITE,
        tags=["voices"],
    )
    async def delete_voice(request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        async with voice_write(runtime, request, "scaispeak.voice.delete", VOICE_WRITE) as write:
            result = await ErasureService(write.deps).delete_voice(
                write.principal, voice_id, write.origin
            )
        return success(result)

    @api("Share your voice with your tenant", permission=VOICE_SHARE, tags=["voices"])
    async def share_voice(request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        async with voice_write(runtime, request, "scaispeak.voice.share", VOICE_SHARE) as write:
            voice = await VoiceService(write.deps).share(write.principal, voice_id, write.origin)
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
        voice_id = request.path_params["voice_id"]
        async with voice_write(runtime, request, "scaispeak.voice.warm", VOICE_WRITE) as write:
            data = await VoiceService(write.deps).warm(write.principal, voice_id, write.origin)
        return success(data)

    @api(
        "Evict the voice from node caches again (also after its deletion)",
        permission=VOICE_WRITE,
        tags=["voices"],
    )
    async def evict_voice(request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        async with voice_write(runtime, request, "scaispeak.voice.evict", VOICE_WRITE) as write:
            data = await ErasureService(write.deps).evict(write.principal, voice_id, write.origin)
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
