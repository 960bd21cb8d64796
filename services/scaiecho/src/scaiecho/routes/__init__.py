"""ScaiEcho's HTTP and WebSocket routes (thin: parse, authorize, call a service, wrap)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute

from scaicommon.runtime import Runtime
from scaiecho.routes.admin import admin_routes
from scaiecho.routes.jobs import job_routes
from scaiecho.routes.openai import openai_routes
from scaiecho.routes.policy import policy_routes
from scaiecho.routes.transcribe import transcribe_routes
from scaiecho.routes.usage import usage_routes


def build_routes(runtime: Runtime) -> Sequence[BaseRoute]:
    """Every module route; probes, metrics and OpenAPI come from scaicommon.web."""
    return [
        *transcribe_routes(runtime),
        *job_routes(runtime),
        *openai_routes(runtime),
        *policy_routes(runtime),
        *usage_routes(runtime),
        *admin_routes(runtime),
    ]
