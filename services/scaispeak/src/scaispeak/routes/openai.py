"""Placeholder until its owner lands the routes."""

from __future__ import annotations

from starlette.routing import BaseRoute

from scaicommon.runtime import Runtime


def openai_routes(runtime: Runtime) -> list[BaseRoute]:
    """No routes yet."""
    del runtime
    return []
