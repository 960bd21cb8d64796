"""ScaiKey JWT verification and the claims mapping (platform §4.5).

The header ``alg`` is checked against RS256/ES256 before anything else, and the key taken from
the JWKS must fit that algorithm, so ``alg: none`` and HS256-signed-with-the-public-key tokens
never reach a verifier. Signatures are verified with authlib; claims are checked here with a
30 s leeway.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import authlib.deprecate  # noqa: F401  (installs its "always" filter before ours below)

from scaicommon.errors import ScaiError
from scaicommon.jwks import JwksCache, key_fits_alg, token_invalid

with warnings.catch_warnings():
    # authlib.jose is deprecated upstream in favour of joserfc; the contract names authlib.
    warnings.simplefilter("ignore")
    from authlib.jose import JoseError, JsonWebKey, JsonWebToken

ALLOWED_ALGS = ("RS256", "ES256")
LEEWAY_S = 30
_TENANT_ISS_RE = re.compile(r"^.+/tenants/(?P<tenant>[^/]+)$")
_MAX_TOKEN_CHARS = 16384


def _segment_json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise token_invalid("the token is not a well-formed JWT") from None
    if not isinstance(value, dict):
        raise token_invalid("the token is not a well-formed JWT")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWT, unverified; ``AUTH_TOKEN_INVALID`` when malformed."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > _MAX_TOKEN_CHARS:
        raise token_invalid("the token is not a well-formed JWT")
    return _segment_json(parts[0])


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise token_invalid(f"the token's {name} claim is not a number")
    return float(value)


def issuer_matches(iss: object, issuer: str) -> bool:
    """``iss`` equals ``issuer`` or starts with ``issuer + "/"`` (so ``….evil`` fails)."""
    if not isinstance(iss, str) or not issuer:
        return False
    return iss == issuer or iss.startswith(issuer + "/")


def _audiences(value: object) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


def split_words(value: object) -> list[str]:
    """A space-separated string (or a list of such strings) as a list of words."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [w for item in value if isinstance(item, str) for w in item.split()]
    return []


def _string_list(value: object) -> list[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise token_invalid(f"the token's {name} claim is not a string")
    return value or None


class JwtVerifier:
    """Verifies ScaiKey JWTs against a :class:`JwksCache` and the configured claim rules."""

    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: Sequence[str] = (),
        required_scope: str = "",
        leeway_s: float = LEEWAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer.rstrip("/")
        self.audience = frozenset(a for a in audience if a)
        self.required_scope = required_scope.strip()
        self.leeway_s = leeway_s
        self._clock = clock

    async def verify(self, token: str) -> dict[str, Any]:
        """Verify signature and claims; return the claims.

        Raises ``AUTH_TOKEN_INVALID``, ``AUTH_INSUFFICIENT_SCOPE`` (with ``required_scope``) or
        ``AUTH_PROVIDER_UNAVAILABLE`` (no key set).
        """
        header = unverified_header(token)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGS:
            raise token_invalid("the token's signing algorithm is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise token_invalid("the token's kid is not a string")
        jwk = await self.jwks.key_for(kid)
        if not key_fits_alg(jwk, str(alg)):
            raise token_invalid("the token's algorithm does not match its signing key")
        claims = self._signature_checked(token, str(alg), jwk)
        self._check_claims(claims)
        return claims

    @staticmethod
    def _signature_checked(token: str, alg: str, jwk: Mapping[str, Any]) -> dict[str, Any]:
        try:
            key = JsonWebKey.import_key(dict(jwk))
            decoded = JsonWebToken([alg]).decode(token, lambda _header, _payload: key)
        except (JoseError, ValueError, TypeError, KeyError):
            raise token_invalid("the token's signature does not verify") from None
        return dict(decoded)

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp = _number(claims, "exp")
        if exp is None:
            raise token_invalid("the token has no exp claim")
        if now > exp + self.leeway_s:
            raise token_invalid("the token has expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self.leeway_s:
            raise token_invalid("the token is not valid yet")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + self.leeway_s:
            raise token_invalid("the token was issued in the future")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise token_invalid("the token has no sub claim")
        if not issuer_matches(claims.get("iss"), self.issuer):
            raise token_invalid("the token was issued by an issuer that is not accepted")
        if self.audience and not (_audiences(claims.get("aud")) & self.audience):
            raise token_invalid("the token is not meant for this audience")
        if self.required_scope and self.required_scope not in split_words(claims.get("scope")):
            raise ScaiError(
                "AUTH_INSUFFICIENT_SCOPE",
                f"the token lacks the {self.required_scope} scope",
                required_scope=self.required_scope,
            )


@dataclass(frozen=True)
class JwtIdentity:
    """The Principal fields a verified JWT maps to (§4.5 claims mapping)."""

    user_id: str
    tenant_id: str | None
    partner_id: str | None
    email: str | None
    roles: frozenset[str]
    module_permissions: frozenset[str]
    core_permissions: frozenset[str]
    scopes: frozenset[str]
    client_id: str | None
    actor: Mapping[str, Any] | None
    service: bool
    expires_at: datetime


def map_claims(claims: Mapping[str, Any], module: str) -> JwtIdentity:
    """Map verified claims to principal fields exactly as the §4.5 table says."""
    tenant_id = _optional_str(claims, "tenant_id")
    if tenant_id is None:
        iss = claims.get("iss")
        match = _TENANT_ISS_RE.match(iss) if isinstance(iss, str) else None
        tenant_id = match.group("tenant") if match else None
    roles = set(_string_list(claims.get("roles")))
    role = claims.get("role")
    if isinstance(role, str) and role:
        roles.add(role)
    module_prefix = module + ":"
    module_permissions = set(_string_list(claims.get("module_permissions")))
    core_permissions: set[str] = set()
    for permission in split_words(claims.get("permissions")):
        (module_permissions if permission.startswith(module_prefix) else core_permissions).add(
            permission
        )
    client_id = _optional_str(claims, "client_id")
    sub = str(claims["sub"])
    act = claims.get("act")
    return JwtIdentity(
        user_id=sub,
        tenant_id=tenant_id,
        partner_id=_optional_str(claims, "partner_id"),
        email=_optional_str(claims, "email"),
        roles=frozenset(roles),
        module_permissions=frozenset(module_permissions),
        core_permissions=frozenset(core_permissions),
        scopes=frozenset(split_words(claims.get("scope"))),
        client_id=client_id,
        actor=dict(act) if isinstance(act, dict) else None,
        service=claims.get("token_type") == "client_credentials" or sub == client_id,
        expires_at=datetime.fromtimestamp(float(claims["exp"]), UTC),
    )
