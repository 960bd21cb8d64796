"""Authentication facade (platform §4): bearer extraction, :class:`Authenticator`,
tenant context and WebSocket authentication.

Tokens never reach a log line: only API key ids and ``sha256`` prefixes do.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal

import httpx
import structlog
from psycopg_pool import AsyncConnectionPool
from starlette.websockets import WebSocket, WebSocketDisconnect

from scaicommon.apikeys import SCAIGRID_KEY_RE, ApiKeyRecord, ApiKeyStore
from scaicommon.errors import ScaiError, internal_error, validation_error
from scaicommon.ids import is_valid_external_id
from scaicommon.jwks import JwksCache, token_invalid
from scaicommon.jwt_verify import LEEWAY_S, JwtIdentity, JwtVerifier, map_claims
from scaicommon.principal import ModulePermissions, Principal
from scaicommon.scaigrid import MeAnswer, ScaiGridClient, token_digest
from scaicommon.settings import CommonSettings
from scaicommon.wsframes import send_error_and_close

log = structlog.get_logger("scaicommon.auth")

TokenKind = Literal["api_key", "jwt"]
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
JWT_ME_CACHE_S = 30.0
TENANT_HEADER = "X-Tenant-ID"
# Codes of failed authentications, which count against the client-IP rate-limit level (§11).
AUTH_FAILURE_CODES = frozenset({"AUTH_TOKEN_MISSING", "AUTH_TOKEN_INVALID"})


def is_failed_authentication(error: ScaiError) -> bool:
    """Whether ``error`` is a failed authentication (counted per client IP, §11)."""
    return error.code in AUTH_FAILURE_CODES


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def extract_bearer(
    headers: Mapping[str, str],
    query_params: Mapping[str, str] | None = None,
    *,
    websocket: bool = False,
) -> str:
    """The bearer token of a request (§4.1).

    ``Authorization: Bearer <token>`` (scheme case-insensitive, one space) wins; WebSocket
    handshakes may use ``?token=`` instead. No token: ``AUTH_TOKEN_MISSING``; an empty token or
    another scheme: ``AUTH_TOKEN_INVALID``.
    """
    value = _header(headers, "authorization")
    if value is None:
        if websocket and query_params is not None:
            token = query_params.get("token")
            if token is not None:
                if not token or any(ch.isspace() for ch in token):
                    raise token_invalid("the token query parameter is empty or malformed")
                return token
        raise ScaiError("AUTH_TOKEN_MISSING", "this call needs a bearer token")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        raise token_invalid("the Authorization header must use the Bearer scheme")
    if not token or any(ch.isspace() for ch in token):
        raise token_invalid("the bearer token is empty or malformed")
    return token


def token_kind(token: str) -> TokenKind | None:
    """``api_key`` for ``sgk_…``, ``jwt`` for three base64url segments, else ``None`` (§4.2)."""
    if token.startswith("sgk_"):
        return "api_key"
    if _JWT_SHAPE.match(token):
        return "jwt"
    return None


def apply_tenant_header(principal: Principal, tenant_header: str | None) -> Principal:
    """§4.9: only a ``super_admin`` may act in another tenant through ``X-Tenant-ID``."""
    if tenant_header is None or tenant_header == "":
        return principal
    if not principal.is_super_admin:
        raise ScaiError("AUTHZ_PERMISSION_DENIED", f"only a super_admin may send {TENANT_HEADER}")
    if not is_valid_external_id(tenant_header):
        raise validation_error(TENANT_HEADER, "not a valid tenant id")
    return dataclasses.replace(principal, tenant_id=tenant_header)


def check_external_ids(principal: Principal) -> None:
    """Reject credentials whose tenant, user or partner id breaks the §1.1 rule."""
    for label, value in (
        ("user", principal.user_id),
        ("tenant", principal.tenant_id),
        ("partner", principal.partner_id),
    ):
        if value is not None and not is_valid_external_id(value):
            raise token_invalid(f"the credential carries an invalid {label} id")


class Authenticator:
    """Resolves a bearer token to a :class:`Principal` (§4.2–§4.6, §4.9).

    - ``scaigrid_base_url`` set: API keys resolve through ScaiGrid ``/v1/me`` and JWT roles and
      permissions come from it too; the local ``api_keys`` table is not read.
    - otherwise API keys resolve from ``pool``'s ``api_keys`` table.
    - ``jwks_url`` empty: every JWT is refused ("JWT authentication is not configured").

    ``http`` is a shared client; when omitted the authenticator owns one (closed by
    :meth:`aclose`).
    """

    def __init__(
        self,
        module: ModulePermissions,
        *,
        jwks_url: str = "",
        issuer: str = "",
        audience: Sequence[str] = (),
        required_scope: str = "",
        scaigrid_base_url: str = "",
        apikey_cache_ttl_s: float = 30.0,
        pool: AsyncConnectionPool | None = None,
        http: httpx.AsyncClient | None = None,
        leeway_s: float = LEEWAY_S,
        jwks_ttl_s: float = 600.0,
        jwks_refetch_interval_s: float = 30.0,
        jwks_stale_max_s: float = 86400.0,
    ) -> None:
        self.module = module
        needs_http = bool(jwks_url or scaigrid_base_url)
        self._owns_http = http is None and needs_http
        self._http: httpx.AsyncClient | None = http
        if self._http is None and needs_http:
            self._http = httpx.AsyncClient(follow_redirects=False)
        self.scaigrid: ScaiGridClient | None = None
        self.api_keys: ApiKeyStore | None = None
        self.jwt: JwtVerifier | None = None
        if scaigrid_base_url:
            assert self._http is not None
            self.scaigrid = ScaiGridClient(
                scaigrid_base_url,
                self._http,
                module=module.module,
                success_ttl_s=apikey_cache_ttl_s,
            )
        elif pool is not None:
            self.api_keys = ApiKeyStore(pool)
        if jwks_url:
            assert self._http is not None
            jwks = JwksCache(
                jwks_url,
                self._http,
                ttl_s=jwks_ttl_s,
                refetch_interval_s=jwks_refetch_interval_s,
                stale_max_s=jwks_stale_max_s,
            )
            self.jwt = JwtVerifier(
                jwks,
                issuer=issuer,
                audience=audience,
                required_scope=required_scope,
                leeway_s=leeway_s,
            )
            if not issuer:
                log.warning("jwt_issuer_not_configured", detail="every JWT will be refused")

    @classmethod
    def from_settings(
        cls,
        settings: CommonSettings,
        module: ModulePermissions,
        *,
        pool: AsyncConnectionPool | None,
        http: httpx.AsyncClient | None = None,
    ) -> Authenticator:
        """Build from a service's settings (§15.2)."""
        return cls(
            module,
            jwks_url=settings.jwks_url,
            issuer=settings.issuer,
            audience=settings.scaikey_audience,
            required_scope=settings.scaikey_required_scope,
            scaigrid_base_url=settings.scaigrid_base_url,
            apikey_cache_ttl_s=settings.apikey_cache_ttl_s,
            pool=pool,
            http=http,
        )

    async def aclose(self) -> None:
        """Finish pending key touches and close the HTTP client when it is ours."""
        if self.api_keys is not None:
            await self.api_keys.drain()
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    async def authenticate(
        self, token: str, *, request_id: str, tenant_header: str | None = None
    ) -> Principal:
        """Resolve ``token`` to a principal, then apply ``X-Tenant-ID`` (§4.9).

        Raises ``ScaiError``: ``AUTH_TOKEN_INVALID``, ``AUTH_INSUFFICIENT_SCOPE``,
        ``AUTH_PROVIDER_UNAVAILABLE``, ``MODULE_NOT_ENABLED``, ``AUTHZ_PERMISSION_DENIED``,
        ``VALIDATION_ERROR`` (bad ``X-Tenant-ID``) or ``SERVICE_UNAVAILABLE`` (Postgres down).
        """
        kind = token_kind(token)
        try:
            if kind == "api_key":
                principal = await self._from_api_key(token, request_id)
            elif kind == "jwt":
                principal = await self._from_jwt(token, request_id)
            else:
                raise token_invalid("the bearer token is neither an API key nor a JWT")
            check_external_ids(principal)
        except ScaiError as exc:
            log.info("auth_failed", code=exc.code, kind=kind, token_sha=token_digest(token)[:12])
            raise
        return apply_tenant_header(principal, tenant_header)

    async def revalidate(self, principal: Principal) -> None:
        """Re-check an API-key principal (long sessions re-check every 60 s, §4.3).

        Raises ``AUTH_TOKEN_INVALID`` once the key is revoked or expired; JWTs pass.
        """
        if principal.auth_kind != "api_key":
            return
        await self.authenticate(principal.token, request_id=principal.request_id)

    # ----- API keys -----------------------------------------------------------------------

    async def _from_api_key(self, token: str, request_id: str) -> Principal:
        if self.scaigrid is not None:
            if not SCAIGRID_KEY_RE.match(token):
                raise token_invalid("the API key is malformed")
            me = await self.scaigrid.me(token, request_id=request_id)
            return self._principal_from_me(me, token, request_id)
        if self.api_keys is None:
            log.error("apikeys_not_configured")
            raise internal_error()
        record = await self.api_keys.resolve(token)
        return self._principal_from_record(record, token, request_id)

    def _principal_from_record(
        self, record: ApiKeyRecord, token: str, request_id: str
    ) -> Principal:
        return Principal(
            user_id=record.user_id,
            tenant_id=record.tenant_id,
            module=self.module,
            auth_kind="api_key",
            request_id=request_id,
            token=token,
            partner_id=record.partner_id,
            roles=frozenset(record.roles),
            module_permissions=frozenset(record.module_permissions),
            api_key_id=record.id,
            token_expires_at=record.expires_at,
        )

    def _principal_from_me(self, me: MeAnswer, token: str, request_id: str) -> Principal:
        return Principal(
            user_id=me.user_id,
            tenant_id=me.tenant_id,
            module=self.module,
            auth_kind="api_key",
            request_id=request_id,
            token=token,
            partner_id=me.partner_id,
            email=me.email,
            roles=me.roles,
            core_permissions=me.core_permissions,
            module_permissions=me.module_permissions,
            api_key_id=me.api_key_id,
        )

    # ----- JWTs ---------------------------------------------------------------------------

    async def _from_jwt(self, token: str, request_id: str) -> Principal:
        if self.jwt is None:
            raise token_invalid("JWT authentication is not configured")
        claims = await self.jwt.verify(token)
        ident = map_claims(claims, self.module.module)
        if self.scaigrid is not None:
            ttl = min(JWT_ME_CACHE_S, ident.expires_at.timestamp() - time.time())
            me = await self.scaigrid.me(token, request_id=request_id, ttl_s=ttl)
            ident = _with_grants(ident, me)
        return Principal(
            user_id=ident.user_id,
            tenant_id=ident.tenant_id,
            module=self.module,
            auth_kind="service" if ident.service else "jwt",
            request_id=request_id,
            token=token,
            partner_id=ident.partner_id,
            email=ident.email,
            roles=ident.roles,
            core_permissions=ident.core_permissions,
            module_permissions=ident.module_permissions,
            scopes=ident.scopes,
            client_id=ident.client_id,
            actor=ident.actor,
            token_expires_at=ident.expires_at,
        )


def _with_grants(ident: JwtIdentity, me: MeAnswer) -> JwtIdentity:
    """Roles and permissions from ``/v1/me``; identity stays with the verified claims."""
    return dataclasses.replace(
        ident,
        roles=me.roles,
        core_permissions=me.core_permissions,
        module_permissions=me.module_permissions,
        partner_id=ident.partner_id or me.partner_id,
        email=ident.email or me.email,
    )


async def ws_authenticate(
    websocket: WebSocket,
    authenticator: Authenticator,
    *,
    permission: str | None,
    request_id: str,
    on_failure: Callable[[ScaiError], Awaitable[ScaiError | None]] | None = None,
) -> Principal | None:
    """§4.10 steps 1–3: accept, authenticate, check ``permission``.

    On failure calls ``on_failure`` (for example to count a failed authentication against the
    client IP; it may return a replacement error such as ``RATE_LIMITED``), sends the ``error``
    frame, closes (4401, 4403, 4429 or 1011) and returns ``None``.
    """
    try:
        await websocket.accept()
    except (WebSocketDisconnect, RuntimeError, OSError):
        return None
    try:
        token = extract_bearer(websocket.headers, websocket.query_params, websocket=True)
        principal = await authenticator.authenticate(
            token, request_id=request_id, tenant_header=websocket.headers.get("x-tenant-id")
        )
        if permission is not None:
            principal.require(permission)
    except ScaiError as exc:
        error = exc
        if on_failure is not None:
            error = await on_failure(exc) or exc
        await send_error_and_close(websocket, error, request_id=request_id)
        return None
    except Exception:
        log.exception("ws_authenticate_failed")
        await send_error_and_close(websocket, internal_error(), request_id=request_id)
        return None
    return principal
