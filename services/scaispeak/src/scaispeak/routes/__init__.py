"""ScaiSpeak's HTTP and WebSocket routes (thin: parse, authorize, call a service, wrap)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute

from scaicommon.runtime import Runtime
from scaispeak.routes.admin import admin_routes
from scaispeak.routes.admin_voices import admin_voice_routes
from scaispeak.routes.jobs import synth_job_routes
from scaispeak.routes.openai import openai_routes
from scaispeak.routes.preview import preview_routes
from scaispeak.routes.scaidrive import scaidrive_routes
from scaispeak.routes.speak import speak_routes
from scaispeak.routes.voice_create import voice_create_routes
from scaispeak.routes.voices import voice_routes


def build_routes(runtime: Runtime) -> Sequence[BaseRoute]:
    """Every module route; probes, metrics and OpenAPI come from scaicommon.web."""
    return [
        *speak_routes(runtime),
        *synth_job_routes(runtime),
        *openai_routes(runtime),
        *preview_routes(runtime),
        *voice_create_routes(runtime),
        *voice_routes(runtime),
        *admin_voice_routes(runtime),
        *admin_routes(runtime),
        *scaidrive_routes(runtime),
    ]
