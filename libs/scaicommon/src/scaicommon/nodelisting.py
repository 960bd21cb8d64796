"""The operator node listing both services serve (platform §6.8).

``GET /v1/admin/nodes`` and its alias ``/v1/infra/nodes`` (ScaiSpeak adds ``<mount>/admin/nodes``):
the registry as the resolver sees it, filtered by ``engine`` and ``include_stale``. Not paginated
(``has_more`` is always false) and not audited (platform §10.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.bodies import parse_bool
from scaicommon.envelope import listing
from scaicommon.errors import service_unavailable
from scaicommon.middleware import principal_of
from scaicommon.nodes import RegistryUnreadable
from scaicommon.openapi import api
from scaicommon.runtime import Runtime

# ----- response shapes (also the OpenAPI schemas) ---------------------------------------


class NodeEngine(msgspec.Struct):
    """One engine of a node, as ``GetNodeInfo`` reports it."""

    kind: str
    name: str
    capabilities: list[str]


class NodeItem(msgspec.Struct):
    """One item of the operator node listing (platform §6.8)."""

    node_id: str | None
    endpoint: str
    health: str
    last_heartbeat_at: str | None
    engines: list[NodeEngine]
    models_loaded: list[str]
    inflight: int
    capacity: int
    version: str | None
    load: float
    draining: bool
    last_error: str | None


class NodeList(msgspec.Struct):
    """``data`` of the node listing."""

    items: list[NodeItem]


# ----- the listing ---------------------------------------------------------------------


class NodeListing:
    """Reads the listing items from the runtime's node registry."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def items(
        self, *, engine: str | None = None, include_stale: bool = True
    ) -> list[dict[str, Any]]:
        """Listing items; ``SERVICE_UNAVAILABLE`` when the registry cannot be read."""
        try:
            return await self._runtime.nodes.listing(engine=engine, include_stale=include_stale)
        except RegistryUnreadable as exc:
            raise service_unavailable("the node registry cannot be read") from exc


def node_listing_routes(
    runtime: Runtime, paths: Sequence[str], *, permission: str
) -> list[BaseRoute]:
    """One ``GET`` route per path, all with the same handler.

    The caller needs ``permission`` or the ``super_admin`` role. Query: ``engine`` (an engine
    kind) and ``include_stale`` (``true`` by default; a bad value is a 422 on that field).
    """

    @api(
        "Inference nodes and their health",
        permission=f"{permission} or role super_admin",
        response=NodeList,
        query={
            "engine": "only nodes with this engine kind, e.g. audio.synthesize",
            "include_stale": "true (default) or false",
        },
        tags=["admin"],
    )
    async def nodes(request: Request) -> Response:
        principal = principal_of(request)
        if not principal.is_super_admin:
            principal.require(permission)
        engine = request.query_params.get("engine") or None
        raw_stale = request.query_params.get("include_stale")
        include_stale = True if raw_stale is None else parse_bool("include_stale", raw_stale)
        items = await NodeListing(runtime).items(engine=engine, include_stale=include_stale)
        return listing(items)

    return [Route(path, nodes, methods=["GET"]) for path in paths]
