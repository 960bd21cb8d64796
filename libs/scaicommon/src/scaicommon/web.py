"""The app factory every service uses: middleware, probes, metrics, OpenAPI and docs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from scaicommon.envelope import CatchAllMiddleware, JSONResponse, scai_exception_handler
from scaicommon.errors import ScaiError
from scaicommon.middleware import AuthMiddleware, DrainBodyMiddleware, ObservabilityMiddleware
from scaicommon.openapi import DOCS_HTML, api, build_openapi
from scaicommon.requestid import RequestIdMiddleware
from scaicommon.runtime import Runtime
from scaicommon.tracing import TracingMiddleware


def public_path_predicate(mount: str, extra_prefixes: Sequence[str] = ()) -> Callable[[str], bool]:
    """Paths that need no token: probes, metrics, OpenAPI, docs and UI page shells."""
    exact = {
        "/healthz",
        "/readyz",
        "/metrics",
        f"{mount}/healthz",
        f"{mount}/readyz",
        f"{mount}/openapi.json",
        f"{mount}/docs",
    }
    prefixes = (f"{mount}/ui/", *extra_prefixes)

    def is_public(path: str) -> bool:
        return path in exact or path.startswith(prefixes)

    return is_public


def standard_routes(runtime: Runtime, app_routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """healthz and readyz (root and mount), /metrics, OpenAPI and the docs page."""
    spec = runtime.spec
    mount = spec.mount

    @api("Liveness: always 200, no I/O", public=True, tags=["health"])
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "module": spec.module})

    @api("Readiness: 503 only when the database or Redis is down", public=True, tags=["health"])
    async def readyz(_: Request) -> Response:
        status, body = await runtime.readiness.evaluate()
        return JSONResponse(body, status_code=status)

    async def metrics(_: Request) -> Response:
        return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)

    openapi_cache: dict[str, Any] = {}

    async def openapi(_: Request) -> Response:
        if not openapi_cache:
            openapi_cache.update(build_openapi(spec.module, spec.version, [*app_routes, *probes]))
        return JSONResponse(openapi_cache)

    async def docs(_: Request) -> Response:
        return HTMLResponse(DOCS_HTML.format(title=spec.module, spec_url=f"{mount}/openapi.json"))

    probes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route(f"{mount}/healthz", healthz, methods=["GET"]),
        Route(f"{mount}/readyz", readyz, methods=["GET"]),
    ]
    return [
        *probes,
        Route("/metrics", metrics, methods=["GET"]),
        Route(f"{mount}/openapi.json", openapi, methods=["GET"]),
        Route(f"{mount}/docs", docs, methods=["GET"]),
    ]


def create_service_app(
    runtime: Runtime,
    routes: Sequence[BaseRoute],
    *,
    public_prefixes: Sequence[str] = (),
    manage_runtime: bool = True,
) -> Starlette:
    """Build the Starlette app of a service around ``runtime`` and its ``routes``.

    With ``manage_runtime`` the app's lifespan starts and closes the runtime.
    """

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.close()

    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(DrainBodyMiddleware),
        Middleware(TracingMiddleware, provider=runtime.tracer_provider, module=runtime.spec.module),
        Middleware(ObservabilityMiddleware, metrics=runtime.metrics),
        Middleware(CatchAllMiddleware),
    ]
    if runtime.settings.cors_allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=runtime.settings.cors_allow_origins,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["X-Request-ID", "Retry-After"],
            )
        )
    middleware.append(
        Middleware(
            AuthMiddleware,
            runtime=runtime,
            is_public=public_path_predicate(runtime.spec.mount, public_prefixes),
        )
    )
    handlers: dict[Any, Any] = {
        ScaiError: scai_exception_handler,
        HTTPException: scai_exception_handler,
        msgspec.ValidationError: scai_exception_handler,
        msgspec.DecodeError: scai_exception_handler,
    }
    app = Starlette(
        routes=[*standard_routes(runtime, routes), *routes],
        middleware=middleware,
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
