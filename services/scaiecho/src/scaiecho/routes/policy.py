"""``GET``/``PATCH /tenant-policy`` (scaiecho.md §3.2)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType
from starlette.routing import BaseRoute

from scaicommon.bodies import RequestBody
from scaicommon.runtime import Runtime
from scaicommon.tenantroutes import policy_routes as shared_policy_routes
from scaiecho.deps import deps_of
from scaiecho.permissions import ADMIN
from scaiecho.services.admin import PolicyAdmin, PolicyView


class PolicyPatch(RequestBody):
    """``PATCH /tenant-policy``: at least one field; merged into the stored policy."""

    allowed_backends: (
        Annotated[str, msgspec.Meta(description="'A', 'B', 'AB' or 'BA'")] | UnsetType
    ) = UNSET
    default_backend: Annotated[str, msgspec.Meta(description="'A' or 'B'")] | UnsetType = UNSET


def policy_routes(runtime: Runtime) -> list[BaseRoute]:
    """The tenant-policy routes under the mount."""
    return shared_policy_routes(
        runtime,
        path=f"{runtime.spec.mount}/tenant-policy",
        deps=deps_of,
        service=PolicyAdmin,
        body=PolicyPatch,
        view=PolicyView,
        read_permission=ADMIN,
        write_permission=ADMIN,
        read_summary="The tenant's backend policy (provisioned on first read)",
        tags=["policy"],
    )
