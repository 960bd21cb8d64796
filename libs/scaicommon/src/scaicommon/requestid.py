"""Request ids: the contextvar and the ASGI middleware that sets it (platform §2.4)."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_current: ContextVar[str | None] = ContextVar("scai_request_id", default=None)

log = structlog.get_logger("scaicommon.requestid")


def new_request_id() -> str:
    """``req_`` followed by 24 lower-case hex characters (96 random bits)."""
    return "req_" + secrets.token_hex(12)


def accept_or_new(inbound: str | None) -> str:
    """Use a valid inbound id verbatim; otherwise mint one (logging the rejected value)."""
    if inbound is not None and _VALID.match(inbound):
        return inbound
    if inbound is not None:
        log.info("client_request_id_rejected", client_request_id=inbound[:200])
    return new_request_id()


def current_request_id() -> str:
    """The request id of the current context, minting one when there is none."""
    value = _current.get()
    if value is None:
        value = new_request_id()
        _current.set(value)
    return value


def set_request_id(value: str) -> None:
    """Bind a request id to the current context (workers bind the enqueuing request's id)."""
    _current.set(value)
    structlog.contextvars.bind_contextvars(request_id=value)


class RequestIdMiddleware:
    """Reads or mints the request id and puts ``X-Request-ID`` on every response.

    WebSocket upgrade responses get the header through the ``websocket.accept`` message.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        inbound = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                inbound = value.decode("latin-1")
                break
        structlog.contextvars.clear_contextvars()
        request_id = accept_or_new(inbound)
        token = _current.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id, tenant_id=None, user_id=None)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*headers, header]
            elif kind == "websocket.accept":
                message["headers"] = [*list(message.get("headers") or []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
