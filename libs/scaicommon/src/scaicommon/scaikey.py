"""ScaiKey RFC 8693 token exchange (platform §13.2) and lenient peer-error parsing (§13.1).

- :class:`TokenExchanger`: exchanges a caller's JWT for a token aimed at another app (ScaiDrive),
  authenticating with the service's own confidential client over HTTP Basic. Answers are cached
  in-process (LRU, 10,000 entries) until ``min(exchanged expiry, subject expiry) - 30 s``.
- The exceptions :class:`TokenExchangeRequiresJwt`, :class:`TokenExchangeRefused`,
  :class:`TokenExchangeUnavailable` and :class:`TokenExchangeUnconfigured`, each with ``reason``
  and ``upstream_message``; modules map them to their own codes.
- :func:`seal_token` / :func:`unseal_token`: AES-GCM sealing of an exchanged token for an async
  job payload, keyed by HKDF-SHA256 of the client secret.
- :class:`PeerError` and :func:`parse_peer_error`: the error body of any HTTP peer.

Tokens never reach logs: log lines carry at most the first 12 hex characters of their sha256.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scaicommon.logging import scrub
from scaicommon.principal import Principal
from scaicommon.requestid import current_request_id
from scaicommon.settings import CommonSettings, Secret
from scaicommon.tracing import inject_trace_headers
from scaicommon.ttlcache import TtlLru

log = structlog.get_logger("scaicommon.scaikey")

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
#: The scopes ScaiDrive work asks for (§13.2), and the read-only set of ScaiDrive references.
SCAIDRIVE_SCOPES = ("files:read", "files:write")
SCAIDRIVE_READ_SCOPES = ("files:read",)
DEFAULT_EXPIRES_IN_S = 300
CACHE_MARGIN_S = 30.0
MAX_ENTRIES = 10_000
TIMEOUT_S = 10.0
SEAL_INFO = b"scaicommon/job-token-seal/v1"
_SEAL_PREFIX = "v1."
_MESSAGE_CHARS = 300
_RETRY_PAUSE_S = 0.2
_OAUTH_ERROR = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


# ----- peer errors (§13.1) ------------------------------------------------------------


@dataclass(frozen=True)
class PeerError:
    """A peer's error answer: HTTP status, its code when it sent one, and a message."""

    status: int
    code: str | None
    message: str


def _short(text: str) -> str:
    return scrub(text.strip())[:_MESSAGE_CHARS]


def _detail_message(detail: object) -> str | None:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        return "; ".join(parts) or None
    return None


def parse_peer_error(status: int, body: bytes) -> PeerError:
    """Read an error body leniently, in the order of §13.1.

    ScaiGrid envelope, bare ``{"error":{code,message}}``, OAuth ``{error, error_description}``,
    FastAPI ``{"detail": …}``, then plain text. Messages are scrubbed and cut to 300 characters.
    """
    text = body.decode("utf-8", errors="replace")
    try:
        data: Any = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            message = error.get("message")
            return PeerError(
                status,
                code if isinstance(code, str) and code else None,
                _short(message) if isinstance(message, str) else "",
            )
        if isinstance(error, str) and error:
            description = data.get("error_description")
            return PeerError(
                status, error, _short(description) if isinstance(description, str) else ""
            )
        detail = _detail_message(data.get("detail"))
        if detail is not None:
            return PeerError(status, None, _short(detail))
    return PeerError(status, None, _short(text))


# ----- exchange errors ----------------------------------------------------------------


class TokenExchangeError(Exception):
    """A failed exchange: ``reason`` (§13.2) and ScaiKey's ``error_description`` if any."""

    def __init__(self, reason: str, message: str, upstream_message: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.upstream_message = upstream_message

    def extras(self) -> dict[str, Any]:
        """The error extras a module puts on its 502: ``reason`` (+ ``upstream_message``)."""
        out: dict[str, Any] = {"reason": self.reason}
        if self.upstream_message:
            out["upstream_message"] = self.upstream_message
        return out


class TokenExchangeRequiresJwt(TokenExchangeError):
    """The principal is an API key or a service token: there is nothing to exchange."""

    def __init__(self) -> None:
        super().__init__("requires_jwt", "only a ScaiKey JWT can be exchanged")


class TokenExchangeRefused(TokenExchangeError):
    """ScaiKey answered 400, 401 or 403 with an OAuth error; ``reason`` is its ``error``."""


class TokenExchangeUnavailable(TokenExchangeError):
    """ScaiKey unreachable, timed out or 5xx after one retry, or an unreadable answer."""


class TokenExchangeUnconfigured(TokenExchangeError):
    """The token URL, client id, client secret or audience is not configured."""

    def __init__(self, missing: str) -> None:
        super().__init__("not_configured", f"token exchange is not configured ({missing})")


# ----- exchanged tokens ---------------------------------------------------------------


@dataclass(frozen=True)
class ExchangedToken:
    """A token ScaiKey issued for ``audience``; ``expires_at`` is Unix seconds."""

    access_token: str = field(repr=False)
    expires_at: float
    audience: str
    scopes: tuple[str, ...]

    def expired(self, *, now: float | None = None, margin_s: float = 0.0) -> bool:
        """Whether the token is (or within ``margin_s`` will be) past its expiry."""
        return (time.time() if now is None else now) >= self.expires_at - margin_s


def token_digest(token: str) -> str:
    """``sha256(token)`` as hex: the cache key, and (first 12 characters) the log handle."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes de-duplicated and sorted, as the request and the cache key use them."""
    return tuple(sorted({s for s in scopes if s}))


# ----- sealing for job payloads -------------------------------------------------------


def _seal_key(client_secret: Secret | str) -> bytes:
    secret = client_secret.get() if isinstance(client_secret, Secret) else client_secret
    if not secret:
        raise ValueError("sealing needs the ScaiKey client secret")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEAL_INFO)
    return hkdf.derive(secret.encode("utf-8"))


def seal_token(token: ExchangedToken, client_secret: Secret | str) -> str:
    """Seal ``token`` with AES-GCM under a key derived from ``client_secret`` (HKDF-SHA256)."""
    plain = json.dumps(
        {
            "access_token": token.access_token,
            "expires_at": token.expires_at,
            "audience": token.audience,
            "scopes": list(token.scopes),
        }
    ).encode("utf-8")
    nonce = os.urandom(12)
    sealed = AESGCM(_seal_key(client_secret)).encrypt(nonce, plain, SEAL_INFO)
    return _SEAL_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal_token(sealed: str, client_secret: Secret | str) -> ExchangedToken:
    """Open a :func:`seal_token` value; raises ``ValueError`` when it was not sealed by us."""
    if not sealed.startswith(_SEAL_PREFIX):
        raise ValueError("not a sealed token")
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_SEAL_PREFIX) :].encode("ascii"))
        plain = AESGCM(_seal_key(client_secret)).decrypt(raw[:12], raw[12:], SEAL_INFO)
        data = json.loads(plain)
        return ExchangedToken(
            access_token=str(data["access_token"]),
            expires_at=float(data["expires_at"]),
            audience=str(data["audience"]),
            scopes=tuple(str(s) for s in data["scopes"]),
        )
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise ValueError("the sealed token cannot be opened") from exc


# ----- the exchanger ------------------------------------------------------------------


class TokenExchanger:
    """RFC 8693 exchange at ScaiKey's token endpoint with an in-process answer cache.

    One instance per process (the cache lives on it); ``http`` is the shared client.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: Secret | str,
        http: httpx.AsyncClient,
        timeout_s: float = TIMEOUT_S,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        self._http = http
        self.timeout_s = timeout_s
        self._clock = clock
        self._cache: TtlLru[tuple[str, str, tuple[str, ...]], ExchangedToken] = TtlLru(max_entries)

    @classmethod
    def from_settings(cls, settings: CommonSettings, http: httpx.AsyncClient) -> TokenExchanger:
        """Built from ``<PREFIX>_SCAIKEY_TOKEN_URL`` (or its default), client id and secret."""
        return cls(
            token_url=settings.token_url,
            client_id=settings.scaikey_client_id,
            client_secret=settings.scaikey_client_secret,
            http=http,
        )

    @property
    def client_secret(self) -> Secret:
        """The client secret (also the root of the job-payload sealing key)."""
        return self._secret

    def _missing(self, audience: str) -> str | None:
        names = {
            "token URL": self.token_url,
            "client id": self.client_id,
            "client secret": self._secret.get(),
            "audience": audience,
        }
        missing = [name for name, value in names.items() if not value]
        return ", ".join(missing) or None

    async def exchange(
        self, principal: Principal, *, audience: str, scopes: Iterable[str]
    ) -> ExchangedToken:
        """Exchange the caller's JWT for ``audience`` with ``scopes``.

        Raises :class:`TokenExchangeRequiresJwt` unless ``principal.auth_kind == "jwt"``, then
        as :meth:`exchange_token`.
        """
        if principal.auth_kind != "jwt":
            raise TokenExchangeRequiresJwt()
        expires = principal.token_expires_at
        return await self.exchange_token(
            principal.token,
            audience=audience,
            scopes=scopes,
            subject_expires_at=expires.timestamp() if expires is not None else None,
        )

    async def exchange_token(
        self,
        subject_token: str,
        *,
        audience: str,
        scopes: Iterable[str],
        subject_expires_at: float | None = None,
    ) -> ExchangedToken:
        """Exchange ``subject_token``; a cached answer is reused while it stays valid.

        Raises :class:`TokenExchangeUnconfigured`, :class:`TokenExchangeRefused` or
        :class:`TokenExchangeUnavailable`.
        """
        missing = self._missing(audience)
        if missing:
            raise TokenExchangeUnconfigured(missing)
        wanted = normalise_scopes(scopes)
        digest = token_digest(subject_token)
        key = (digest, audience, wanted)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        token = await self._request(subject_token, audience, wanted, digest)
        valid_until = token.expires_at
        if subject_expires_at is not None:
            valid_until = min(valid_until, subject_expires_at)
        self._cache.put(key, token, valid_until - CACHE_MARGIN_S - self._clock())
        return token

    def _authorization(self) -> str:
        # RFC 6749 §2.3.1: id and secret are form-encoded before the Basic encoding.
        pair = f"{quote(self.client_id, safe='')}:{quote(self._secret.get(), safe='')}"
        return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")

    async def _request(
        self, subject_token: str, audience: str, scopes: tuple[str, ...], digest: str
    ) -> ExchangedToken:
        form = {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": TOKEN_TYPE_ACCESS,
            "requested_token_type": TOKEN_TYPE_ACCESS,
            "audience": audience,
        }
        if scopes:
            form["scope"] = " ".join(scopes)
        headers = {
            "Authorization": self._authorization(),
            "Accept": "application/json",
            "X-Request-ID": current_request_id(),
        }
        inject_trace_headers(headers)
        response: httpx.Response | None = None
        for attempt in (1, 2):
            try:
                response = await self._http.post(
                    self.token_url, data=form, headers=headers, timeout=self.timeout_s
                )
            except httpx.HTTPError as exc:
                log.warning(
                    "scaikey_exchange_unreachable",
                    error=type(exc).__name__,
                    attempt=attempt,
                    token_sha=digest[:12],
                )
                response = None
            if response is not None and response.status_code < 500:
                break
            if response is not None:
                log.warning(
                    "scaikey_exchange_server_error",
                    status=response.status_code,
                    attempt=attempt,
                    token_sha=digest[:12],
                )
            if attempt == 1:
                await asyncio.sleep(_RETRY_PAUSE_S)
        if response is None or response.status_code >= 500:
            raise TokenExchangeUnavailable("scaikey_unreachable", "ScaiKey cannot be reached")
        if response.status_code != 200:
            raise self._refusal(response, digest)
        return self._answer(response, audience, scopes, digest)

    def _refusal(self, response: httpx.Response, digest: str) -> TokenExchangeError:
        status = response.status_code
        peer = parse_peer_error(status, response.content)
        is_oauth = peer.code is not None and _OAUTH_ERROR.match(peer.code) is not None
        if is_oauth and 400 <= status < 500 and peer.code is not None:
            log.info(
                "scaikey_exchange_refused", status=status, reason=peer.code, token_sha=digest[:12]
            )
            return TokenExchangeRefused(
                peer.code, f"ScaiKey refused the token exchange ({peer.code})", peer.message or None
            )
        log.warning("scaikey_exchange_unreadable", status=status, token_sha=digest[:12])
        return TokenExchangeUnavailable(
            "invalid_response", f"ScaiKey answered {status} without an OAuth error"
        )

    def _answer(
        self, response: httpx.Response, audience: str, scopes: tuple[str, ...], digest: str
    ) -> ExchangedToken:
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            log.warning("upstream_shape_mismatch", upstream="scaikey", token_sha=digest[:12])
            raise TokenExchangeUnavailable(
                "invalid_response", "ScaiKey's answer carries no access_token"
            )
        assert isinstance(body, dict)
        expires_in = body.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else float(DEFAULT_EXPIRES_IN_S)
        )
        granted = body.get("scope")
        granted_scopes = normalise_scopes(granted.split()) if isinstance(granted, str) else scopes
        log.info("scaikey_exchanged", audience=audience, expires_in=lifetime, token_sha=digest[:12])
        return ExchangedToken(
            access_token=token,
            expires_at=self._clock() + lifetime,
            audience=audience,
            scopes=granted_scopes,
        )
