"""ScaiKey JWKS cache (platform §4.5).

- The key set is cached for ``ttl_s`` (600 s).
- A ``kid`` not in the cache triggers one refetch. Refetches (every fetch after the first
  successful one: unknown-kid fetches and TTL refreshes) happen at most once per
  ``refetch_interval_s`` (30 s) per cache.
- A failed refetch keeps the cached set for up to ``stale_max_s`` (24 h), with a warning.
- Without any successful fetch, callers get ``AUTH_PROVIDER_UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from scaicommon.errors import ScaiError

log = structlog.get_logger("scaicommon.jwks")

# Which key types may verify which algorithm; nothing else is accepted (§4.5).
_ALG_KEY = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}


def provider_unavailable(
    message: str = "the token issuer's signing keys are unavailable",
) -> ScaiError:
    """``AUTH_PROVIDER_UNAVAILABLE`` with the contract's ``retry_after`` of 5 s."""
    return ScaiError("AUTH_PROVIDER_UNAVAILABLE", message, retry_after=5)


def token_invalid(message: str) -> ScaiError:
    """``AUTH_TOKEN_INVALID`` with ``message``."""
    return ScaiError("AUTH_TOKEN_INVALID", message)


@dataclass(frozen=True)
class _Fetched:
    keys: tuple[Mapping[str, Any], ...]
    at: float


def _usable(jwk: Any) -> bool:
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return False
    kty = jwk.get("kty")
    if kty == "RSA":
        return isinstance(jwk.get("n"), str) and isinstance(jwk.get("e"), str)
    if kty == "EC":
        return jwk.get("crv") == "P-256" and isinstance(jwk.get("x"), str)
    return False


def key_fits_alg(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether ``jwk`` may verify a token signed with ``alg`` (type, curve and any ``alg``)."""
    wanted = _ALG_KEY.get(alg)
    if wanted is None:
        return False
    kty, crv = wanted
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        return False
    declared = jwk.get("alg")
    return declared is None or declared == alg


class JwksCache:
    """Fetches and caches a JWKS; :meth:`key_for` picks the verification key for a ``kid``."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        ttl_s: float = 600.0,
        refetch_interval_s: float = 30.0,
        stale_max_s: float = 86400.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._http = http
        self.ttl_s = ttl_s
        self.refetch_interval_s = refetch_interval_s
        self.stale_max_s = stale_max_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._cached: _Fetched | None = None
        self._last_refetch: float | None = None
        self._completed = 0
        self._lock = asyncio.Lock()

    async def _download(self) -> tuple[Mapping[str, Any], ...]:
        response = await self._http.get(
            self.url, timeout=self.timeout_s, headers={"Accept": "application/json"}
        )
        response.raise_for_status()
        body = response.json()
        raw = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise ValueError("JWKS body has no 'keys' list")
        return tuple(jwk for jwk in raw if _usable(jwk))

    async def _fetch(self, reason: str) -> None:
        """Fetch once, unless another caller finished a fetch while this one waited."""
        seen = self._completed
        async with self._lock:
            if self._completed != seen:
                return  # someone else just tried; use whatever they got
            if self._cached is not None:
                self._last_refetch = self._clock()
            try:
                keys = await self._download()
            except (httpx.HTTPError, ValueError) as exc:
                age = None if self._cached is None else round(self._clock() - self._cached.at)
                log.warning(
                    "jwks_fetch_failed",
                    reason=reason,
                    error=type(exc).__name__,
                    cached_age_s=age,
                    url=self.url,
                )
                return
            finally:
                self._completed += 1
            self._cached = _Fetched(keys=keys, at=self._clock())
            log.info("jwks_fetched", reason=reason, keys=len(keys), url=self.url)

    def _may_refetch(self) -> bool:
        return (
            self._last_refetch is None
            or self._clock() - self._last_refetch >= self.refetch_interval_s
        )

    async def _current(self) -> _Fetched:
        if self._cached is None:
            await self._fetch("initial")
        elif self._clock() - self._cached.at >= self.ttl_s and self._may_refetch():
            await self._fetch("expired")
        cached = self._cached
        if cached is None:
            raise provider_unavailable()
        if self._clock() - cached.at > self.stale_max_s:
            log.warning("jwks_too_stale", age_s=round(self._clock() - cached.at), url=self.url)
            raise provider_unavailable()
        return cached

    @staticmethod
    def _find(keys: tuple[Mapping[str, Any], ...], kid: str) -> Mapping[str, Any] | None:
        return next((k for k in keys if k.get("kid") == kid), None)

    async def key_for(self, kid: str | None) -> Mapping[str, Any]:
        """The JWK that should verify a token with header ``kid``.

        Raises ``AUTH_PROVIDER_UNAVAILABLE`` when no key set was ever fetched (or the cached one
        is older than ``stale_max_s``) and ``AUTH_TOKEN_INVALID`` for a missing or unknown kid.
        """
        cached = await self._current()
        if kid is None:
            if len(cached.keys) == 1:
                return cached.keys[0]
            raise token_invalid("the token header has no kid")
        found = self._find(cached.keys, kid)
        if found is None and self._may_refetch():
            await self._fetch("unknown_kid")
            cached = await self._current()
            found = self._find(cached.keys, kid)
        if found is None:
            raise token_invalid("the token was signed with an unknown key")
        return found
