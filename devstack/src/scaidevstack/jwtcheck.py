"""JWT verification shared by dev ScaiKey (subject tokens) and dev ScaiDrive (bearer tokens).

Rules follow platform.md §4.5: RS256/ES256 only, ``kid`` required unless the key set holds a
single key, ``exp`` and ``sub`` required, 30 s leeway, and an issuer prefix match.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any

from scaidevstack._jose import JoseError, JsonWebKey, JsonWebToken

ALLOWED_ALGS: tuple[str, ...] = ("RS256", "ES256")
LEEWAY_S = 30

_JWT = JsonWebToken(list(ALLOWED_ALGS))


class TokenError(Exception):
    """The token is malformed, badly signed, expired or otherwise unacceptable."""


class UnknownKidError(TokenError):
    """The token names a ``kid`` that the key set does not hold."""


def _b64url_json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise TokenError("token segment is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise TokenError("token segment is not a JSON object")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    """Return the JOSE header of a compact JWT without checking anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token is not a compact JWS")
    return _b64url_json(parts[0])


def unverified_claims(token: str) -> dict[str, Any]:
    """Return the payload of a compact JWT without verifying the signature."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token is not a compact JWS")
    return _b64url_json(parts[1])


def issuer_matches(iss: object, expected: str) -> bool:
    """True when ``iss`` equals ``expected`` or starts with ``expected + "/"``."""
    base = expected.rstrip("/")
    return isinstance(iss, str) and (iss == base or iss.startswith(base + "/"))


def _select_key(header: Mapping[str, Any], jwks: Mapping[str, Any]) -> dict[str, Any]:
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)]
    kid = header.get("kid")
    if kid is None:
        if len(keys) == 1:
            return keys[0]
        raise TokenError("token has no kid")
    for key in keys:
        if key.get("kid") == kid:
            return key
    raise UnknownKidError(f"unknown kid {kid!r}")


def verify_jwt(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str | None,
    leeway: int = LEEWAY_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify ``token`` against the public keys in ``jwks`` and return its claims.

    ``issuer`` (when given) must equal the token's ``iss`` or prefix it followed by ``/``.
    Raises :class:`UnknownKidError` for a ``kid`` not in ``jwks`` and :class:`TokenError`
    for every other failure.
    """
    header = unverified_header(token)
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise TokenError(f"algorithm {alg!r} is not allowed")
    jwk = _select_key(header, jwks)
    if jwk.get("alg") not in (None, alg):
        raise TokenError("token algorithm does not match its key")
    try:
        key = JsonWebKey.import_key(jwk)
        claims = _JWT.decode(
            token,
            key,
            claims_options={"exp": {"essential": True}, "sub": {"essential": True}},
        )
        claims.validate(now=int(now if now is not None else time.time()), leeway=leeway)
    except JoseError as exc:
        raise TokenError(f"token rejected: {exc}") from exc
    except ValueError as exc:
        raise TokenError(f"token rejected: {exc}") from exc
    result = dict(claims)
    if issuer is not None and not issuer_matches(result.get("iss"), issuer):
        raise TokenError(f"issuer {result.get('iss')!r} is not accepted")
    return result
