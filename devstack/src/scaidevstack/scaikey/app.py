"""Dev ScaiKey HTTP app: JWKS, OIDC discovery and the token endpoint (platform.md §17.3)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from scaidevstack.scaikey.clients import ClientRegistry
from scaidevstack.scaikey.grants import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    OAuthError,
    TokenEndpoint,
)
from scaidevstack.scaikey.keys import SUPPORTED_ALGS, KeyStore
from scaidevstack.scaikey.tokens import tenant_issuer

PLATFORM_PREFIX = "/api/v1/platform"
TENANT_PREFIX = "/api/v1/auth/tenants/{slug}"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _discovery(request: Request, issuer: str, prefix: str) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": f"{base}{prefix}/.well-known/jwks.json",
        "token_endpoint": f"{base}{prefix}/oauth/token",
        "grant_types_supported": [GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }


def create_app(keys: KeyStore, clients: ClientRegistry, issuer_base: str) -> Starlette:
    """Build the Starlette app serving ``keys`` and ``clients`` under ``issuer_base``."""
    keys.ensure()
    base = issuer_base.rstrip("/")
    endpoint = TokenEndpoint(keys, clients, base)

    def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def jwks(request: Request) -> JSONResponse:
        return JSONResponse(keys.jwks(), headers={"Cache-Control": "max-age=60"})

    def platform_discovery(request: Request) -> JSONResponse:
        return JSONResponse(_discovery(request, base, PLATFORM_PREFIX))

    def tenant_discovery(request: Request) -> JSONResponse:
        slug = request.path_params["slug"]
        prefix = TENANT_PREFIX.format(slug=slug)
        return JSONResponse(_discovery(request, tenant_issuer(base, slug), prefix))

    async def token(request: Request) -> JSONResponse:
        slug = request.path_params.get("slug")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            error = OAuthError(
                "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
            return JSONResponse(error.body(), status_code=error.status, headers=_NO_STORE)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            answer = await run_in_threadpool(
                endpoint.issue, fields, request.headers.get("authorization"), tenant=slug
            )
        except OAuthError as exc:
            return JSONResponse(
                exc.body(), status_code=exc.status, headers={**_NO_STORE, **exc.headers}
            )
        return JSONResponse(answer, headers=_NO_STORE)

    routes = [
        Route("/healthz", healthz),
        Route(f"{PLATFORM_PREFIX}/.well-known/jwks.json", jwks),
        Route(f"{TENANT_PREFIX}/.well-known/jwks.json", jwks),
        Route(f"{PLATFORM_PREFIX}/oauth/.well-known/openid-configuration", platform_discovery),
        Route(f"{TENANT_PREFIX}/.well-known/openid-configuration", tenant_discovery),
        # Standard discovery locations derived from the issuers themselves.
        Route("/.well-known/openid-configuration", platform_discovery),
        Route("/tenants/{slug}/.well-known/openid-configuration", tenant_discovery),
        Route(f"{PLATFORM_PREFIX}/oauth/token", token, methods=["POST"]),
        Route(f"{TENANT_PREFIX}/oauth/token", token, methods=["POST"]),
    ]
    return Starlette(routes=routes)
