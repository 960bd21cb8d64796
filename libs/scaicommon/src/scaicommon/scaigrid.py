"""ScaiGrid ``GET /v1/me`` client, its answer mapping and its cache (platform §4.4, §4.6)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from scaicommon.errors import ScaiError
from scaicommon.jwks import provider_unavailable, token_invalid
from scaicommon.ttlcache import TtlLru

log = structlog.get_logger("scaicommon.scaigrid")

ME_TIMEOUT_S = 5.0
NEGATIVE_TTL_S = 5.0
MAX_ENTRIES = 10_000


def token_digest(token: str) -> str:
    """``sha256(token)`` as lower-case hex: the cache key, and (prefix only) the log handle."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ShapeMismatch(ValueError):
    """The ``/v1/me`` body cannot be read (``UPSTREAM_SHAPE_MISMATCH``)."""


@dataclass(frozen=True)
class MeAnswer:
    """The fields of a ``/v1/me`` answer that the principal uses (§4.6)."""

    user_id: str
    tenant_id: str | None
    partner_id: str | None
    email: str | None
    roles: frozenset[str]
    core_permissions: frozenset[str]
    module_permissions: frozenset[str]
    api_key_id: str | None
    enabled_modules: frozenset[str] | None


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ShapeMismatch(f"{name} is not a string")
    return value


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ShapeMismatch("expected a list of strings")
    return [v for v in value if isinstance(v, str) and v]


def _module_keys(value: object, module: str) -> frozenset[str]:
    """Only this module's keys, from a list or from an object ``{module: [keys]}``."""
    prefix = module + ":"
    if not isinstance(value, dict):
        return frozenset(v for v in _strings(value) if v.startswith(prefix))
    keys: set[str] = set()
    for entry in _strings(value.get(module)):
        if entry.startswith(prefix):
            keys.add(entry)
        elif ":" not in entry:
            keys.add(prefix + entry)  # the object form may list bare names under the module
    return frozenset(keys)


def parse_me(body: object, module: str) -> MeAnswer:
    """Map an envelope ``{"status":"ok","data":{…}}`` or bare object (§4.6).

    Raises :class:`ShapeMismatch` when the body is not an object or has no user id.
    """
    if not isinstance(body, dict):
        raise ShapeMismatch("body is not an object")
    data = body.get("data")
    if isinstance(data, dict) and "user_id" not in body and "id" not in body:
        body = data
    user_id = _opt_str(body, "user_id") or _opt_str(body, "id")
    if user_id is None:
        raise ShapeMismatch("no user id")
    roles = set(_strings(body.get("roles")))
    role = _opt_str(body, "role")
    if role:
        roles.add(role)
    enabled = body.get("enabled_modules")
    return MeAnswer(
        user_id=user_id,
        tenant_id=_opt_str(body, "tenant_id"),
        partner_id=_opt_str(body, "partner_id"),
        email=_opt_str(body, "email"),
        roles=frozenset(roles),
        core_permissions=frozenset(_strings(body.get("permissions"))),
        module_permissions=_module_keys(body.get("module_permissions"), module),
        api_key_id=_opt_str(body, "api_key_id"),
        enabled_modules=None if enabled is None else frozenset(_strings(enabled)),
    )


class ScaiGridClient:
    """Calls ``/v1/me`` and caches answers by ``sha256(token)`` (LRU, 10,000 entries).

    Successes live for ``success_ttl_s`` (or the TTL a caller passes), 401/403 answers for 5 s.
    """

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        module: str,
        success_ttl_s: float = 30.0,
        negative_ttl_s: float = NEGATIVE_TTL_S,
        max_entries: int = MAX_ENTRIES,
        timeout_s: float = ME_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = base_url.rstrip("/") + "/v1/me"
        self.module = module
        self.success_ttl_s = success_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.timeout_s = timeout_s
        self._http = http
        self._cache: TtlLru[str, MeAnswer | ScaiError] = TtlLru(max_entries, clock=clock)

    async def me(self, token: str, *, request_id: str, ttl_s: float | None = None) -> MeAnswer:
        """The ``/v1/me`` answer for ``token``, from cache when fresh.

        ``ttl_s`` replaces the success TTL (JWTs: ``min(30 s, exp - now)``); 401/403 answers
        are kept for at most 5 s.

        Raises ``AUTH_TOKEN_INVALID`` (401/403), ``AUTH_PROVIDER_UNAVAILABLE`` (network,
        timeout, 5xx, unreadable body) or ``MODULE_NOT_ENABLED``.
        """
        digest = token_digest(token)
        cached = self._cache.get(digest)
        if cached is None:
            cached = await self._call(token, digest, request_id)
            success_ttl = self.success_ttl_s if ttl_s is None else ttl_s
            negative_ttl = self.negative_ttl_s if ttl_s is None else min(ttl_s, self.negative_ttl_s)
            self._cache.put(
                digest, cached, negative_ttl if isinstance(cached, ScaiError) else success_ttl
            )
        if isinstance(cached, ScaiError):
            raise ScaiError(cached.code, cached.message)
        if cached.enabled_modules is not None and self.module not in cached.enabled_modules:
            raise ScaiError(
                "MODULE_NOT_ENABLED", f"the {self.module} module is not enabled for this tenant"
            )
        return cached

    async def _call(self, token: str, digest: str, request_id: str) -> MeAnswer | ScaiError:
        """One ``/v1/me`` request; returns the answer or the cacheable 401/403 error."""
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Request-ID": request_id,
            "Accept": "application/json",
        }
        try:
            response = await self._http.get(self.url, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            log.warning("scaigrid_unreachable", error=type(exc).__name__, token_sha=digest[:12])
            raise provider_unavailable("ScaiGrid cannot be reached") from None
        status = response.status_code
        if status in (401, 403):
            log.info("scaigrid_rejected_token", status=status, token_sha=digest[:12])
            return token_invalid("the credential was rejected")
        if not 200 <= status < 300:
            log.warning("scaigrid_error", status=status, token_sha=digest[:12])
            raise provider_unavailable("ScaiGrid cannot be reached")
        try:
            return parse_me(response.json(), self.module)
        except (ValueError, ShapeMismatch) as exc:
            log.warning("upstream_shape_mismatch", upstream="scaigrid", error=str(exc)[:200])
            raise provider_unavailable("ScaiGrid answered with something unreadable") from None

    def forget(self, token: str) -> None:
        """Drop the cached answer for ``token``."""
        self._cache.pop(token_digest(token))
