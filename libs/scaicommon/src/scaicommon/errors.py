"""The one exception hierarchy and the error-code table (platform §3).

Every failure the services report is a :class:`ScaiError` (or a subclass) carrying a
code from the table; the envelope handlers turn it into the HTTP body or the
WebSocket ``error`` frame. Routes never build error bodies by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# code -> HTTP status (platform §3.1).
PLATFORM_CODES: dict[str, int] = {
    "AUTH_TOKEN_MISSING": 401,
    "AUTH_TOKEN_INVALID": 401,
    "BUDGET_EXCEEDED": 402,
    "AUTH_INSUFFICIENT_SCOPE": 403,
    "AUTHZ_PERMISSION_DENIED": 403,
    "MODULE_NOT_ENABLED": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_ERROR": 422,
    "RATE_LIMITED": 429,
    "QUOTA_EXCEEDED": 429,
    "BACKEND_RATE_LIMITED": 429,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "BACKEND_ERROR": 502,
    "UPSTREAM_SHAPE_MISMATCH": 502,
    "SERVICE_UNAVAILABLE": 503,
    "AUTH_PROVIDER_UNAVAILABLE": 503,
    "BACKEND_TIMEOUT": 504,
}

# Codes every module must carry, as suffixes of ``<MODULE>_`` (platform §3.2).
SHARED_MODULE_CODES: dict[str, int] = {
    "BACKEND_UNAVAILABLE": 502,
    "JOB_NOT_FOUND": 404,
    "AUDIO_DECODE_FAILED": 422,
    "AUDIO_FORMAT_UNSUPPORTED": 415,
    "AUDIO_TOO_LONG": 422,
    "WEBRTC_UNAVAILABLE": 501,
    "WEBRTC_SESSION_NOT_FOUND": 404,
    "WEBRTC_SESSION_STATE_LOST": 410,
}

# Transport-only WebSocket codes and their close codes (platform §3.4).
TRANSPORT_CODES: dict[str, int] = {
    "protocol_error": 4400,
    "idle_timeout": 4408,
    "session_not_ready": 4404,
    "control_replaced": 4409,
    "peer_connection_failed": 1011,
}

_module_codes: dict[str, int] = {}

RESERVED_KEYS = frozenset({"code", "message", "retry_after", "details"})


def register_module_codes(module: str, codes: Mapping[str, int]) -> None:
    """Register a module's codes (``{code: http_status}``) plus the shared module codes."""
    prefix = module.upper() + "_"
    for suffix, status in SHARED_MODULE_CODES.items():
        _module_codes[prefix + suffix] = status
    for code, status in codes.items():
        if not code.startswith(prefix):
            raise ValueError(f"module code {code!r} must start with {prefix!r}")
        _module_codes[code] = status


def status_for(code: str) -> int:
    """The HTTP status of a platform or registered module code (500 when unknown)."""
    return PLATFORM_CODES.get(code) or _module_codes.get(code) or 500


def ws_close_for(code: str, http_status: int, *, session_started: bool = False) -> int:
    """The WebSocket close code for an error (platform §3.4)."""
    if code in TRANSPORT_CODES:
        return TRANSPORT_CODES[code]
    if code == "PAYLOAD_TOO_LARGE":
        return 1009
    if session_started:
        return 1011
    if code.endswith("_BACKEND_UNAVAILABLE"):
        return 4502
    if http_status in (400, 415, 422):
        return 4400
    if http_status in (402, 429) or code.endswith("_CAPACITY_EXHAUSTED"):
        return 4429
    if http_status in (401, 403, 404, 408, 409):
        return 4000 + http_status
    return 1011


class ScaiError(Exception):
    """A failure with a contract code, HTTP status and optional extras.

    ``ScaiError(code, message, *, http_status=None, retry_after=None, details=None, **extras)``
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: int | None = None,
        details: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extras: Any,
    ) -> None:
        super().__init__(message)
        bad = RESERVED_KEYS.intersection(extras)
        if bad:
            raise ValueError(f"extras may not reuse reserved keys: {sorted(bad)}")
        self.code = code
        self.message = message
        self.http_status = http_status or status_for(code)
        self.retry_after = retry_after
        self.details = details
        self.headers: dict[str, str] = dict(headers or {})
        self.extras: dict[str, Any] = extras

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    @property
    def failover_eligible(self) -> bool:
        """Whether a dispatcher may move to another backend after this failure (platform §5.4).

        ``False`` here; node and relay errors say ``True`` for the failures that are not the
        caller's fault.
        """
        return False

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the envelope (without ``meta``)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = int(self.retry_after)
        if self.details is not None:
            body["details"] = self.details
        body.update(self.extras)
        return body


def validation_error(field: str, message: str, *, summary: str | None = None) -> ScaiError:
    """A ``VALIDATION_ERROR`` with a single ``details`` entry."""
    return ScaiError(
        "VALIDATION_ERROR",
        summary or f"{field}: {message}",
        details=[{"field": field, "message": message}],
    )


def not_found(code: str = "NOT_FOUND", message: str = "not found") -> ScaiError:
    """A 404 with the given (module) not-found code."""
    return ScaiError(code, message, http_status=404)


def internal_error() -> ScaiError:
    """The generic 500; the message never carries detail."""
    return ScaiError("INTERNAL_ERROR", "internal error")


def service_unavailable(message: str = "a dependency is unavailable") -> ScaiError:
    """``SERVICE_UNAVAILABLE`` with the contract's ``retry_after`` of 5 s."""
    return ScaiError("SERVICE_UNAVAILABLE", message, retry_after=5)
