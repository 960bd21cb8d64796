"""ASGI middleware of every service: access log + metrics, and authentication + rate limit.

Order of checks on HTTP (platform §11): request id → authentication → rate limit →
route permission (in the route) → validation → policy and quota → dispatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from scaicommon.auth import ws_authenticate
from scaicommon.envelope import error_response, is_openai_path
from scaicommon.errors import ScaiError
from scaicommon.logging import scrub
from scaicommon.metrics import ServiceMetrics
from scaicommon.principal import Principal
from scaicommon.ratelimit import Decision
from scaicommon.requestid import current_request_id
from scaicommon.wsframes import send_error_and_close

if TYPE_CHECKING:
    from scaicommon.runtime import Runtime

access_log = structlog.get_logger("scaicommon.access")
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class ObservabilityMiddleware:
    """Writes the ``http_request`` access-log line and the HTTP metrics."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            client = scope.get("client")
            access_log.info(
                "ws_connect",
                path=scrub(_path_with_query(scope)),
                client_ip=client[0] if client else None,
            )
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        bytes_in = 0
        bytes_out = 0

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            bytes_in += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_duration.labels(method, route).observe(elapsed)
            client = scope.get("client")
            log = access_log.debug if _is_probe(scope["path"]) else access_log.info
            log(
                "http_request",
                method=method,
                route=route,
                path=scrub(_path_with_query(scope)),
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client_ip=client[0] if client else None,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
            )


def _path_with_query(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return str(scope["path"]) + ("?" + query if query else "")


def _is_probe(path: str) -> bool:
    return any(path == p or path.endswith(p) for p in _PROBES)


class AuthMiddleware:
    """Authenticates every non-public HTTP request and applies the rate limiter.

    The principal lands on ``request.state.principal``; rate-limit headers go on every
    counted response. WebSockets authenticate inside their route (``ws_open``).
    """

    def __init__(self, app: ASGIApp, runtime: Runtime, is_public: Callable[[str], bool]) -> None:
        self.app = app
        self.runtime = runtime
        self.is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        runtime = self.runtime
        headers = Headers(scope=scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        try:
            principal = await runtime.authenticate_headers(headers, state["request_id"])
        except ScaiError as error:
            await self._reject(
                await failed_authentication(runtime, error, ip), scope, receive, send
            )
            return
        state["principal"] = principal
        decision = await admit(runtime, principal)
        if not decision.allowed:
            await self._reject(decision.to_error(), scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    @staticmethod
    async def _reject(error: ScaiError, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(error, openai=is_openai_path(scope["path"]))
        await response(scope, receive, send)


async def failed_authentication(runtime: Runtime, error: ScaiError, ip: str) -> ScaiError:
    """Count a failed authentication (metrics, the IP level of §11); return what to answer.

    A client over its IP budget for failed authentications gets ``RATE_LIMITED`` instead.
    """
    runtime.metrics.auth_failures.labels(error.code).inc()
    if error.http_status != 401:
        return error
    decision = await runtime.limiter.check_failed_auth(ip)
    if decision.allowed:
        return error
    runtime.metrics.ratelimit_rejections.labels("ip").inc()
    return decision.to_error()


async def admit(runtime: Runtime, principal: Principal) -> Decision:
    """Bind the caller to the log context and apply the rate limiter (§11)."""
    structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id, user_id=principal.user_id)
    decision = await runtime.limiter.check(
        api_key_id=principal.api_key_id,
        user_id=principal.user_id,
        tenant_id=principal.tenant_id,
        partner_id=principal.partner_id,
    )
    if not decision.allowed:
        runtime.metrics.ratelimit_rejections.labels(decision.level or "unknown").inc()
    return decision


async def ws_open(
    websocket: WebSocket, runtime: Runtime, permission: str | None
) -> Principal | None:
    """§4.10 steps 1–4 for a WebSocket route: accept, authenticate, authorize, rate-limit.

    Returns ``None`` after an ``error`` frame and the close (4401, 4403, 4429 or 1011).
    """
    state: dict[str, Any] = websocket.scope.setdefault("state", {})
    request_id = str(state.get("request_id") or current_request_id())
    client = websocket.client
    ip = client.host if client else "unknown"

    async def on_failure(error: ScaiError) -> ScaiError:
        return await failed_authentication(runtime, error, ip)

    principal = await ws_authenticate(
        websocket,
        runtime.authenticator,
        permission=permission,
        request_id=request_id,
        on_failure=on_failure,
    )
    if principal is None:
        return None
    decision = await admit(runtime, principal)
    if not decision.allowed:
        await send_error_and_close(websocket, decision.to_error(), request_id=request_id)
        return None
    state["principal"] = principal
    return principal


def principal_of(request: Any) -> Principal:
    """The authenticated principal of a request (set by :class:`AuthMiddleware`)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise ScaiError("AUTH_TOKEN_MISSING", "authentication required")
    return principal


#: Refused requests whose body is at most this large are read to the end (see below).
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class DrainBodyMiddleware:
    """Before an error answer goes out, read what the client is still sending (bounded).

    A request refused before its body was read (401, 403, 415, 422 on an upload) would
    otherwise end with the server closing the connection while the client still sends, and many
    clients then see a reset instead of the error. Bodies over :data:`DRAIN_LIMIT_BYTES` are not
    read: those clients get the reset.
    """

    def __init__(self, app: ASGIApp, limit: int = DRAIN_LIMIT_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._has_small_body(scope):
            await self.app(scope, receive, send)
            return
        complete = False

        async def tracking_receive() -> Message:
            nonlocal complete
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def draining_send(message: Message) -> None:
            nonlocal complete
            if (
                message["type"] == "http.response.start"
                and int(message["status"]) >= 400
                and not complete
            ):
                await self._drain(receive)
                complete = True
            await send(message)

        await self.app(scope, tracking_receive, draining_send)

    async def _drain(self, receive: Receive) -> None:
        received = 0
        while received <= self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _has_small_body(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None:
            return length.isdigit() and 0 < int(length) <= self.limit
        return "chunked" in headers.get("transfer-encoding", "").lower()
