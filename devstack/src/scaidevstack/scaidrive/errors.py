"""ScaiDrive errors and the two answer shapes the dev server deliberately mixes (§17.4).

Errors with a ``code`` are sent as the envelope ``{"status":"error","error":{"code","message"}}``;
the others as FastAPI-style ``{"detail": "..."}``.
"""

from __future__ import annotations

from typing import Any


class DriveError(Exception):
    """Base class: an HTTP status, an optional envelope code and a message."""

    status: int = 500
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON answer body in this error's shape."""
        if self.code is None:
            return {"detail": self.message}
        return {"status": "error", "error": {"code": self.code, "message": self.message}}


class InvalidRequestError(DriveError):
    """The request is malformed (``detail`` shape, 422)."""

    status = 422


class UnauthorizedError(DriveError):
    """No usable bearer token (``detail`` shape, 401)."""

    status = 401


class ForbiddenError(DriveError):
    """Missing scope or membership role (``detail`` shape, 403)."""

    status = 403


class NotFoundError(DriveError):
    """Unknown resource, or one in another tenant (``detail`` shape, 404)."""

    status = 404


class NameConflictError(DriveError):
    """Something with that name already exists in the folder (envelope, 409)."""

    status = 409
    code = "NAME_CONFLICT"


class PayloadTooLargeError(DriveError):
    """The upload exceeds the per-file limit (envelope, 413)."""

    status = 413
    code = "PAYLOAD_TOO_LARGE"


class QuotaExceededError(DriveError):
    """The upload would exceed the share's quota (envelope, 507)."""

    status = 507
    code = "QUOTA_EXCEEDED"


class UnavailableError(DriveError):
    """ScaiKey's keys cannot be fetched (``detail`` shape, 503)."""

    status = 503
