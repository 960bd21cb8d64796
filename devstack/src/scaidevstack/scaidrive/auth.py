"""Bearer-token authentication for dev ScaiDrive.

Tokens are verified against ScaiKey's JWKS (``SCAIKEY_JWKS_URL``) with an issuer prefix match on
``SCAIKEY_ISSUER``. Like the real ScaiDrive, ``aud`` is not checked.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from scaidevstack.jwtcheck import TokenError, UnknownKidError, verify_jwt
from scaidevstack.scaidrive.errors import ForbiddenError, UnauthorizedError, UnavailableError

JWKS_URL_ENV = "SCAIKEY_JWKS_URL"
ISSUER_ENV = "SCAIKEY_ISSUER"
DEFAULT_ISSUER = "http://127.0.0.1:8091"
DEFAULT_JWKS_URL = f"{DEFAULT_ISSUER}/api/v1/platform/.well-known/jwks.json"
ADMIN_SCOPE = "tenant:admin"
JWKS_TTL_S = 600.0
MIN_REFETCH_S = 1.0


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: identity, tenant and granted scopes."""

    user_id: str
    tenant_id: str | None
    scopes: frozenset[str]
    claims: Mapping[str, Any]

    def has_scope(self, scope: str) -> bool:
        """True when ``scope`` was granted; ``tenant:admin`` grants every scope."""
        return ADMIN_SCOPE in self.scopes or scope in self.scopes

    def require_scope(self, scope: str) -> None:
        """Raise 403 unless ``scope`` was granted."""
        if not self.has_scope(scope):
            raise ForbiddenError(f"Insufficient scope: '{scope}' is required")


def caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    """Map verified claims to a :class:`Caller`.

    The tenant is ``tenant_id``, else the last segment of an ``…/tenants/{id}`` issuer. A token
    without a ``scope`` claim counts as ``tenant:admin``.
    """
    tenant = claims.get("tenant_id")
    if not tenant:
        prefix, sep, last = str(claims.get("iss", "")).rpartition("/")
        tenant = last if sep and prefix.endswith("/tenants") and last else None
    scope = claims.get("scope")
    if scope is None:
        scopes = frozenset({ADMIN_SCOPE})
    elif isinstance(scope, str):
        scopes = frozenset(scope.split())
    else:
        scopes = frozenset(str(s) for s in scope)
    return Caller(
        user_id=str(claims["sub"]),
        tenant_id=str(tenant) if tenant else None,
        scopes=scopes,
        claims=dict(claims),
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header, else raise 401."""
    if not authorization:
        raise UnauthorizedError("Not authenticated")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Invalid authentication credentials")
    return token.strip()


class JwksVerifier:
    """Verifies JWTs against a remote JWKS, cached for 10 minutes and refetched on unknown kid."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        *,
        client: httpx.AsyncClient | None = None,
        ttl_s: float = JWKS_TTL_S,
        min_refetch_s: float = MIN_REFETCH_S,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._owns_client = client is None
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._jwks: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls, jwks_url: str | None = None, issuer: str | None = None) -> JwksVerifier:
        """Build from arguments, else ``$SCAIKEY_JWKS_URL`` / ``$SCAIKEY_ISSUER``, else defaults."""
        url = jwks_url or os.environ.get(JWKS_URL_ENV) or DEFAULT_JWKS_URL
        iss = issuer or os.environ.get(ISSUER_ENV) or DEFAULT_ISSUER
        return cls(url, iss)

    async def aclose(self) -> None:
        """Close the HTTP client when this verifier created it."""
        if self._owns_client:
            await self._client.aclose()

    async def _fetch(self, *, force: bool) -> dict[str, Any]:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            fresh = self._jwks is not None and age < self._ttl_s
            if self._jwks is not None and (
                (not force and fresh) or (force and age < self._min_refetch_s)
            ):
                return self._jwks
            try:
                answer = await self._client.get(self.jwks_url)
                answer.raise_for_status()
                data = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                if self._jwks is not None:
                    return self._jwks
                raise UnavailableError(f"Cannot fetch signing keys: {exc}") from exc
            if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
                raise UnavailableError("Signing keys have an unexpected shape")
            self._jwks = data
            self._fetched_at = time.monotonic()
            return data

    async def verify(self, token: str) -> dict[str, Any]:
        """Verify ``token`` and return its claims; raise 401 when it is not acceptable."""
        jwks = await self._fetch(force=False)
        try:
            try:
                return verify_jwt(token, jwks, issuer=self.issuer)
            except UnknownKidError:
                jwks = await self._fetch(force=True)
                return verify_jwt(token, jwks, issuer=self.issuer)
        except TokenError as exc:
            raise UnauthorizedError(f"Invalid token: {exc}") from exc

    async def authenticate(self, authorization: str | None) -> Caller:
        """Resolve an ``Authorization`` header to a :class:`Caller` with a tenant."""
        claims = await self.verify(bearer_token(authorization))
        caller = caller_from_claims(claims)
        if caller.tenant_id is None:
            raise ForbiddenError("Token carries no tenant")
        return caller
