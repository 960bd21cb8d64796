"""The ScaiDrive picker proxy (scaispeak.md §9.6): shares and folders for choosing ``save_to``."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scaicommon.envelope import listing
from scaicommon.middleware import principal_of
from scaicommon.openapi import api
from scaicommon.runtime import Runtime
from scaispeak.deps import deps_of
from scaispeak.permissions import SYNTHESIZE
from scaispeak.services.drive_refs import DrivePicker


class PickerShare(msgspec.Struct):
    """A share the caller may write to."""

    share_id: str
    name: str
    type: str
    role: str


class PickerShares(msgspec.Struct):
    """``data`` of ``GET /scaidrive/shares``."""

    items: list[PickerShare]


class PickerFolder(msgspec.Struct):
    """A sub-folder."""

    folder_id: str
    name: str


class PickerFolders(msgspec.Struct):
    """``data`` of ``GET /scaidrive/shares/{share_id}/folders``."""

    items: list[PickerFolder]
    share_id: str
    parent_id: str | None
    path: str


def scaidrive_routes(runtime: Runtime) -> list[BaseRoute]:
    """``GET /scaidrive/shares`` and ``GET /scaidrive/shares/{share_id}/folders``."""
    mount = runtime.spec.mount

    @api(
        "The caller's ScaiDrive shares where they may write (JWT callers only)",
        permission=SYNTHESIZE,
        response=PickerShares,
        tags=["scaidrive"],
    )
    async def shares(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        return listing(await DrivePicker(deps_of(runtime)).shares(principal))

    @api(
        "Sub-folders of a ScaiDrive folder (JWT callers only)",
        permission=SYNTHESIZE,
        response=PickerFolders,
        query={"parent_id": "folder whose sub-folders to list; omitted = the share root"},
        tags=["scaidrive"],
    )
    async def folders(request: Request) -> Response:
        principal = principal_of(request)
        principal.require(SYNTHESIZE)
        share_id = request.path_params["share_id"]
        parent_id = request.query_params.get("parent_id") or None
        data = await DrivePicker(deps_of(runtime)).folders(principal, share_id, parent_id)
        items = data.pop("items")
        return listing(items, extra=data)

    return [
        Route(f"{mount}/scaidrive/shares", shares, methods=["GET"]),
        Route(f"{mount}/scaidrive/shares/{{share_id}}/folders", folders, methods=["GET"]),
    ]
