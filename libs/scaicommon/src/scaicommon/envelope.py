"""Success and error envelopes and the handlers that produce them (platform §2, §3.3, §3.5)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaicommon.errors import ScaiError, internal_error
from scaicommon.requestid import current_request_id

JSON_TYPE = "application/json; charset=utf-8"
log = structlog.get_logger("scaicommon.envelope")

_encoder = msgspec.json.Encoder()


class JSONResponse(Response):
    """A JSON response encoded with msgspec (Structs, datetimes and dicts alike)."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def _meta() -> dict[str, str]:
    return {"request_id": current_request_id()}


def success(
    data: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"status":"ok","data":…,"meta":{"request_id"}}``; ``data`` must be an object."""
    body = {"status": "ok", "data": data, "meta": _meta()}
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


def listing(
    items: list[Any],
    *,
    has_more: bool = False,
    next_cursor: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A list envelope: ``data.items`` plus top-level ``pagination`` (§2.5)."""
    data: dict[str, Any] = {"items": items, **(extra or {})}
    body = {
        "status": "ok",
        "data": data,
        "pagination": {"has_more": has_more, "next_cursor": next_cursor if has_more else None},
        "meta": _meta(),
    }
    return JSONResponse(body)


def error_body(error: ScaiError) -> dict[str, Any]:
    """The error envelope for ``error``."""
    return {"status": "error", "error": error.to_dict(), "meta": _meta()}


_OPENAI_TYPES = {401: "authentication_error", 402: "permission_error", 403: "permission_error"}


def openai_error_body(error: ScaiError) -> tuple[int, dict[str, Any]]:
    """OpenAI's error shape for the compatible routes (§3.5): returns (status, body)."""
    status = 400 if error.code == "VALIDATION_ERROR" else error.http_status
    if status in (400, 409, 413, 415, 422):
        kind = "invalid_request_error"
    elif status == 404:
        kind = "not_found_error"
    elif status == 429:
        quota = error.code in ("QUOTA_EXCEEDED", "BUDGET_EXCEEDED")
        kind = "insufficient_quota" if quota else "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = _OPENAI_TYPES.get(status, "invalid_request_error")
    param = error.details[0]["field"] if error.details else None
    body = {"error": {"message": error.message, "type": kind, "param": param, "code": error.code}}
    return status, body


def error_response(error: ScaiError, *, openai: bool = False) -> JSONResponse:
    """Render ``error`` as a response, in OpenAI's shape when ``openai`` is set."""
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(int(error.retry_after))
    if openai:
        status, body = openai_error_body(error)
    else:
        status, body = error.http_status, error_body(error)
    return JSONResponse(body, status_code=status, headers=headers)


def http_exception_to_error(exc: HTTPException) -> ScaiError:
    """Map Starlette's HTTP exceptions (unknown route, wrong method, …) to contract codes."""
    if exc.status_code == 404:
        return ScaiError("NOT_FOUND", "no such route")
    if exc.status_code == 405:
        err = ScaiError("METHOD_NOT_ALLOWED", "method not allowed on this route")
        err.headers.update(exc.headers or {})
        return err
    if exc.status_code == 413:
        return ScaiError("PAYLOAD_TOO_LARGE", "request body too large")
    if exc.status_code == 415:
        return ScaiError("UNSUPPORTED_MEDIA_TYPE", "content type not accepted")
    if exc.status_code == 400:
        return ScaiError(
            "VALIDATION_ERROR",
            "request body could not be parsed",
            details=[{"field": "body", "message": str(exc.detail)[:200]}],
        )
    if exc.status_code >= 500:
        return internal_error()
    return ScaiError("VALIDATION_ERROR", str(exc.detail)[:200], http_status=exc.status_code)


def msgspec_error_to_validation(exc: msgspec.ValidationError | msgspec.DecodeError) -> ScaiError:
    """Turn a msgspec decode failure into ``VALIDATION_ERROR`` with ``details`` (§2.2)."""
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        text = "body is not valid JSON"
        return ScaiError("VALIDATION_ERROR", text, details=[{"field": "body", "message": text}])
    text, _, where = str(exc).partition(" - at `")
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    if text.startswith("Object contains unknown field `"):
        name = text.split("`")[1]
        field = f"{path}.{name}" if path else name
        message = "unknown field"
        return ScaiError(
            "VALIDATION_ERROR",
            f"unknown field {field!r}",
            details=[{"field": field, "message": message}],
        )
    field = path or "body"
    return ScaiError(
        "VALIDATION_ERROR", f"{field}: {text}", details=[{"field": field, "message": text}]
    )


def is_openai_path(path: str) -> bool:
    """Routes under ``/v1/modules/<module>/v1/`` answer errors in OpenAI's shape."""
    parts = path.split("/")
    return len(parts) > 4 and parts[1] == "v1" and parts[2] == "modules" and parts[4] == "v1"


def to_scai_error(exc: BaseException) -> ScaiError:
    """Classify any exception as a :class:`ScaiError` (unknown ones become ``INTERNAL_ERROR``)."""
    if isinstance(exc, ScaiError):
        return exc
    if isinstance(exc, HTTPException):
        return http_exception_to_error(exc)
    if isinstance(exc, msgspec.ValidationError | msgspec.DecodeError):
        return msgspec_error_to_validation(exc)
    return internal_error()


async def scai_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every exception class we register."""
    error = to_scai_error(exc)
    if error.code == "INTERNAL_ERROR" and not isinstance(exc, ScaiError):
        log.error("unhandled_exception", exc_info=exc, path=request.url.path)
    return error_response(error, openai=is_openai_path(request.url.path))


class CatchAllMiddleware:
    """Turns any exception escaping the app into the envelope; never a traceback.

    If the response had already started (a streamed body), nothing is rewritten: the
    stream is cut and ``response_aborted`` is logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                log.error("response_aborted", exc_info=exc, path=scope.get("path"))
                return
            error = to_scai_error(exc)
            if error.code == "INTERNAL_ERROR" and not isinstance(exc, ScaiError):
                log.error("unhandled_exception", exc_info=exc, path=scope.get("path"))
            response = error_response(error, openai=is_openai_path(scope.get("path", "")))
            await response(scope, receive, send)


def retry_after_from_seconds(seconds: float) -> int:
    """Whole seconds for ``retry_after``, at least 1."""
    return max(1, math.ceil(seconds))
