"""ScaiEcho's app factory and service definition."""

from __future__ import annotations

from importlib import resources

from starlette.applications import Starlette

import scaiecho.errors  # noqa: F401  (registers the module codes)
from scaicommon.cli import ServiceDefinition
from scaicommon.runtime import ServiceSpec
from scaiecho import __version__
from scaiecho.permissions import PERMISSIONS
from scaiecho.routes import build_routes
from scaiecho.settings import EchoSettings
from scaiecho.worker import build_worker

SPEC = ServiceSpec(
    module="scaiecho",
    version=__version__,
    permissions=PERMISSIONS,
    engine_kind="audio.transcribe",
)

DEFINITION = ServiceDefinition(
    spec=SPEC,
    settings_cls=EchoSettings,
    routes=build_routes,
    worker=build_worker,
    migrations=resources.files("scaiecho.store") / "migrations",
)


def create_app(settings: EchoSettings | None = None) -> Starlette:
    """The ScaiEcho ASGI app (settings from the environment when not given)."""
    return DEFINITION.create_app(settings or EchoSettings.from_env())
