"""Claim sets issued by dev ScaiKey: issuers, scopes and the user token of ``scaikey mint``."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8091
ISSUER_BASE_ENV = "SCAIKEY_ISSUER_BASE"
CLI_CLIENT_ID = "devstack-cli"
EXPIRED_AGO_S = 3600


def default_issuer_base(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """``$SCAIKEY_ISSUER_BASE`` when set, else ``http://{host}:{port}`` (no trailing slash)."""
    from_env = os.environ.get(ISSUER_BASE_ENV, "").strip()
    if from_env:
        return from_env.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = DEFAULT_HOST
    return f"http://{host}:{port}"


def tenant_issuer(issuer_base: str, tenant: str) -> str:
    """The tenant issuer ``{base}/tenants/{tenant}``."""
    return f"{issuer_base.rstrip('/')}/tenants/{tenant}"


def split_scope(scope: str | Iterable[str] | None) -> list[str]:
    """Split a space-separated scope string (or iterable) into unique scopes, order kept."""
    if scope is None:
        return []
    parts = scope.split() if isinstance(scope, str) else [p for s in scope for p in s.split()]
    return list(dict.fromkeys(parts))


def new_jti() -> str:
    """A fresh, unique ``jti``."""
    return uuid.uuid4().hex


def build_user_claims(
    *,
    tenant: str,
    user: str,
    partner: str | None = None,
    roles: Iterable[str] = (),
    permissions: Iterable[str] = (),
    scope: str | Iterable[str] | None = None,
    audience: str | None = None,
    email: str | None = None,
    ttl: int = 3600,
    expired: bool = False,
    issuer_base: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """Claims of a user token, as platform.md §17.3 lists them.

    ``role`` is the first of ``roles``. Optional claims that were not given (``partner_id``,
    ``role``, ``scope``, ``email``, ``aud``) are left out rather than set to ``null``; in
    particular a token minted without ``scope`` has no ``scope`` claim at all.
    ``expired`` makes the token expire an hour before ``now``.
    """
    issued = int(time.time()) if now is None else now
    role_list = list(dict.fromkeys(roles))
    if expired:
        exp = issued - EXPIRED_AGO_S
        iat = exp - ttl
    else:
        iat = issued
        exp = issued + ttl
    base = issuer_base.rstrip("/") if issuer_base else default_issuer_base()
    claims: dict[str, Any] = {
        "iss": tenant_issuer(base, tenant),
        "sub": user,
        "tenant_id": tenant,
        "roles": role_list,
        "module_permissions": list(dict.fromkeys(permissions)),
        "client_id": CLI_CLIENT_ID,
        "iat": iat,
        "exp": exp,
        "jti": new_jti(),
    }
    if partner:
        claims["partner_id"] = partner
    if role_list:
        claims["role"] = role_list[0]
    scopes = split_scope(scope)
    if scope is not None:
        claims["scope"] = " ".join(scopes)
    if email:
        claims["email"] = email
    if audience:
        claims["aud"] = audience
    return claims
