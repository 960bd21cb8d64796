"""Request-body decoding with the contract's strict rules (platform §2.2)."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from scaicommon.errors import ScaiError

T = TypeVar("T")

DEFAULT_MAX_JSON_BYTES = 1 << 20


class RequestBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every JSON request body: unknown fields are a ``VALIDATION_ERROR``."""


async def read_json(
    request: Request, type_: type[T], *, max_bytes: int = DEFAULT_MAX_JSON_BYTES
) -> T:
    """Decode the JSON body strictly into ``type_`` (no coercion, unknown fields refused)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ScaiError(
            "UNSUPPORTED_MEDIA_TYPE",
            "this route takes application/json",
            details=[{"field": "Content-Type", "message": f"got {content_type or 'nothing'}"}],
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ScaiError("PAYLOAD_TOO_LARGE", "request body too large", max_bytes=max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ScaiError("PAYLOAD_TOO_LARGE", "request body too large", max_bytes=max_bytes)
        chunks.append(chunk)
    return msgspec.json.decode(b"".join(chunks), type=type_, strict=True)


def parse_bool(field: str, raw: str) -> bool:
    """Multipart and query booleans: ``true``/``false``/``1``/``0``, case-insensitively."""
    low = raw.strip().lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise ScaiError(
        "VALIDATION_ERROR",
        f"{field} must be true or false",
        details=[{"field": field, "message": f"expected true/false/1/0, got {raw[:40]!r}"}],
    )
