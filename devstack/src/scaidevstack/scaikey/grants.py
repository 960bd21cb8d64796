"""The token endpoint's grants: ``client_credentials`` and RFC 8693 token exchange.

Everything here is synchronous and HTTP-free: the app hands over the form fields and the
``Authorization`` header and gets back the JSON answer or an :class:`OAuthError`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from scaidevstack.jwtcheck import TokenError, verify_jwt
from scaidevstack.scaikey.clients import Client, ClientAuthError, ClientRegistry
from scaidevstack.scaikey.keys import KeyStore
from scaidevstack.scaikey.tokens import new_jti, split_scope, tenant_issuer

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
SUBJECT_TOKEN_TYPES = (TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT)
EXCHANGE_TTL_S = 300
CLIENT_CREDENTIALS_TTL_S = 3600
COPIED_CLAIMS = ("tenant_id", "partner_id", "email")


class OAuthError(Exception):
    """An RFC 6749 error answer: ``{"error", "error_description"}`` with an HTTP status."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        """The JSON body of the error answer."""
        return {"error": self.error, "error_description": self.description}


class TokenEndpoint:
    """Issues tokens for the ``/oauth/token`` routes."""

    def __init__(self, keys: KeyStore, clients: ClientRegistry, issuer_base: str) -> None:
        self.keys = keys
        self.clients = clients
        self.issuer_base = issuer_base.rstrip("/")

    def issue(
        self,
        form: Mapping[str, str],
        authorization: str | None,
        *,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Authenticate the client and run the requested grant.

        ``tenant`` is the ``{slug}`` of the tenant-scoped route, ``None`` on the platform route.
        Returns the token answer; raises :class:`OAuthError` on any refusal.
        """
        try:
            client = self.clients.authenticate(authorization, form)
        except ClientAuthError as exc:
            headers = {"WWW-Authenticate": 'Basic realm="scaikey"'} if exc.basic else None
            raise OAuthError(
                "invalid_client", exc.description, status=401, headers=headers
            ) from exc
        grant_type = form.get("grant_type", "")
        if grant_type == GRANT_CLIENT_CREDENTIALS:
            return self.client_credentials(client, form, tenant=tenant)
        if grant_type == GRANT_TOKEN_EXCHANGE:
            return self.token_exchange(client, form)
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    def client_credentials(
        self, client: Client, form: Mapping[str, str], *, tenant: str | None = None
    ) -> dict[str, Any]:
        """A service token: ``sub`` = ``client_id``, scopes limited to ``allowed_scopes``."""
        requested = split_scope(form.get("scope"))
        allowed = list(client.allowed_scopes)
        if requested:
            refused = [s for s in requested if s not in allowed]
            if refused:
                raise OAuthError(
                    "invalid_scope", f"scopes not allowed for {client.client_id}: {refused}"
                )
            scopes = requested
        else:
            scopes = allowed
        now = int(time.time())
        issuer = tenant_issuer(self.issuer_base, tenant) if tenant else self.issuer_base
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "token_type": "client_credentials",
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + CLIENT_CREDENTIALS_TTL_S,
            "jti": new_jti(),
        }
        return {
            "access_token": self.keys.sign(claims),
            "token_type": "Bearer",
            "expires_in": CLIENT_CREDENTIALS_TTL_S,
            "scope": claims["scope"],
        }

    def token_exchange(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        """RFC 8693 exchange of a user token for a token aimed at ``audience`` (§17.3 rules)."""
        subject_token = form.get("subject_token", "")
        if not subject_token:
            raise OAuthError("invalid_request", "subject_token is required")
        subject_type = form.get("subject_token_type", "")
        if subject_type not in SUBJECT_TOKEN_TYPES:
            raise OAuthError("invalid_request", f"unsupported subject_token_type {subject_type!r}")
        requested_type = form.get("requested_token_type") or TOKEN_TYPE_ACCESS
        if requested_type not in SUBJECT_TOKEN_TYPES:
            raise OAuthError(
                "invalid_request", f"unsupported requested_token_type {requested_type!r}"
            )
        audience = form.get("audience", "")
        if not audience or audience not in client.token_exchange_allowed:
            raise OAuthError(
                "invalid_target",
                f"client {client.client_id} may not exchange tokens for audience {audience!r}",
            )
        now = int(time.time())
        try:
            subject = verify_jwt(subject_token, self.keys.jwks(), issuer=self.issuer_base, leeway=0)
        except TokenError as exc:
            raise OAuthError("invalid_grant", f"subject token is invalid: {exc}") from exc
        remaining = int(subject["exp"]) - now
        if remaining <= 0:
            raise OAuthError("invalid_grant", "subject token has expired")

        requested = split_scope(form.get("scope"))
        subject_scope = subject.get("scope")
        if isinstance(subject_scope, str):
            granted = split_scope(subject_scope)
            refused = [s for s in requested if s not in granted]
            if refused:
                raise OAuthError(
                    "invalid_scope", f"scopes {refused} exceed the subject token's scope"
                )
            scopes = requested or granted
        else:
            scopes = requested

        lifetime = min(EXCHANGE_TTL_S, remaining)
        claims: dict[str, Any] = {"iss": subject["iss"], "sub": subject["sub"]}
        for name in COPIED_CLAIMS:
            if subject.get(name) is not None:
                claims[name] = subject[name]
        claims.update(
            {
                "aud": audience,
                "client_id": client.client_id,
                "act": {"sub": client.client_id, "client_id": client.client_id},
                "iat": now,
                "exp": now + lifetime,
                "jti": new_jti(),
            }
        )
        if scopes or isinstance(subject_scope, str):
            claims["scope"] = " ".join(scopes)
        return {
            "access_token": self.keys.sign(claims),
            "issued_token_type": TOKEN_TYPE_ACCESS,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(scopes),
        }
