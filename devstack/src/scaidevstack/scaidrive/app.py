"""Dev ScaiDrive HTTP app: shares, folders and files (platform.md §17.4, §13.3)."""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from scaidevstack.scaidrive.auth import Caller, JwksVerifier
from scaidevstack.scaidrive.errors import (
    DriveError,
    InvalidRequestError,
    PayloadTooLargeError,
)
from scaidevstack.scaidrive.store import Actor, DriveStore

READ_SCOPE = "files:read"
WRITE_SCOPE = "files:write"
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024
DEFAULT_PAGE = 100
MAX_PAGE = 1000
_MULTIPART_SLACK = 64 * 1024


def _actor(caller: Caller) -> Actor:
    assert caller.tenant_id is not None
    return Actor(tenant_id=caller.tenant_id, user_id=caller.user_id)


def _int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low} and {high}")
    return value


def _form_str(form: Any, name: str, *, required: bool) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequestError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a text field")
    return value


def create_app(
    store: DriveStore,
    verifier: JwksVerifier,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Starlette:
    """Build the Starlette app over ``store``, authenticating with ``verifier``."""

    async def authorize(request: Request, scope: str) -> Actor:
        caller = await verifier.authenticate(request.headers.get("authorization"))
        caller.require_scope(scope)
        return _actor(caller)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def my_shares(request: Request) -> Response:
        actor = await authorize(request, READ_SCOPE)
        shares = await run_in_threadpool(store.shares_for, actor)
        return JSONResponse({"shares": shares, "total": len(shares)})

    async def children(request: Request) -> Response:
        actor = await authorize(request, READ_SCOPE)
        share_id = request.query_params.get("share_id")
        if not share_id:
            raise InvalidRequestError("share_id is required")
        limit = _int_param(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
        offset = _int_param(request, "offset", 0, low=0, high=2**31)
        items, path = await run_in_threadpool(
            store.list_children, actor, share_id, request.path_params["folder_id"]
        )
        return JSONResponse(
            {"items": items[offset : offset + limit], "path": path, "total": len(items)}
        )

    async def create_folder(request: Request) -> Response:
        actor = await authorize(request, WRITE_SCOPE)
        try:
            body = await request.json()
        except ValueError as exc:
            raise InvalidRequestError("body must be JSON") from exc
        if not isinstance(body, dict):
            raise InvalidRequestError("body must be a JSON object")
        name, share_id, parent_id = body.get("name"), body.get("share_id"), body.get("parent_id")
        if not isinstance(name, str) or not isinstance(share_id, str):
            raise InvalidRequestError("name and share_id are required strings")
        if parent_id is not None and not isinstance(parent_id, str):
            raise InvalidRequestError("parent_id must be a string or null")
        folder = await run_in_threadpool(store.create_folder, actor, share_id, parent_id, name)
        return JSONResponse(folder, status_code=201)

    async def upload(request: Request) -> Response:
        try:
            actor = await authorize(request, WRITE_SCOPE)
        except Exception:
            # Read what the client is still sending (bounded), so the refusal is not lost to
            # a connection reset while its upload is in flight.
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_file_bytes + _MULTIPART_SLACK:
                    break
            raise
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_file_bytes + _MULTIPART_SLACK:
            raise PayloadTooLargeError(f"File exceeds the limit of {max_file_bytes} bytes")
        async with request.form(max_part_size=1024 * 1024) as form:
            share_id = _form_str(form, "share_id", required=True)
            folder_id = _form_str(form, "folder_id", required=False)
            upload_file = form.get("file")
            if not isinstance(upload_file, UploadFile):
                raise InvalidRequestError("file is required")
            name = _form_str(form, "name", required=False) or upload_file.filename or ""
            data = await upload_file.read()
            content_type = upload_file.content_type or ""
        if len(data) > max_file_bytes:
            raise PayloadTooLargeError(f"File exceeds the limit of {max_file_bytes} bytes")
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        assert share_id is not None
        record = await run_in_threadpool(
            store.add_file, actor, share_id, folder_id, name, data, content_type
        )
        return JSONResponse(record, status_code=201)

    async def get_file(request: Request) -> Response:
        actor = await authorize(request, READ_SCOPE)
        record = await run_in_threadpool(store.get_file, actor, request.path_params["file_id"])
        return JSONResponse(record)

    async def file_content(request: Request) -> Response:
        actor = await authorize(request, READ_SCOPE)
        record, path = await run_in_threadpool(
            store.open_file, actor, request.path_params["file_id"]
        )
        return FileResponse(
            path,
            media_type=record["mime_type"],
            filename=record["name"],
            headers={"X-Checksum-SHA256": record["checksum_sha256"]},
        )

    async def delete_file(request: Request) -> Response:
        actor = await authorize(request, WRITE_SCOPE)
        await run_in_threadpool(store.delete_file, actor, request.path_params["file_id"])
        return Response(status_code=204)

    async def drive_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DriveError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await verifier.aclose()

    routes = [
        Route("/healthz", healthz),
        Route("/api/v1/users/me/shares", my_shares),
        Route("/api/v1/folders/{folder_id}/children", children),
        Route("/api/v1/folders", create_folder, methods=["POST"]),
        Route("/api/v1/files", upload, methods=["POST"]),
        Route("/api/v1/files/{file_id}", get_file, methods=["GET"]),
        Route("/api/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/api/v1/files/{file_id}/content", file_content),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={DriveError: drive_error, HTTPException: http_error},
        lifespan=lifespan,
    )
