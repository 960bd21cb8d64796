"""ScaiSpeak's app factory and service definition."""

from __future__ import annotations

from importlib import resources

from starlette.applications import Starlette

import scaispeak.errors  # noqa: F401  (registers the module codes)
from scaicommon.cli import ServiceDefinition
from scaicommon.runtime import ServiceSpec
from scaispeak import __version__
from scaispeak.health import build_checks
from scaispeak.permissions import PERMISSIONS
from scaispeak.routes import build_routes
from scaispeak.settings import SpeakSettings
from scaispeak.worker import build_worker

SPEC = ServiceSpec(
    module="scaispeak",
    version=__version__,
    permissions=PERMISSIONS,
    engine_kind="audio.synthesize",
)

DEFINITION = ServiceDefinition(
    spec=SPEC,
    settings_cls=SpeakSettings,
    routes=build_routes,
    worker=build_worker,
    migrations=resources.files("scaispeak.store") / "migrations",
    checks=build_checks,
)


def create_app(settings: SpeakSettings | None = None) -> Starlette:
    """The ScaiSpeak ASGI app (settings from the environment when not given)."""
    return DEFINITION.create_app(settings or SpeakSettings.from_env())
