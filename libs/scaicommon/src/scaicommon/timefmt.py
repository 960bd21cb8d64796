"""ISO-8601 UTC formatting and parsing (platform §1.2)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def format_ts(value: datetime | None) -> str | None:
    """Format as ``2026-04-22T14:30:01.123Z`` (UTC, milliseconds); ``None`` stays ``None``."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime cannot be formatted as UTC")
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset (or ``Z``) and normalise it to UTC.

    Raises ``ValueError`` for a timestamp without an offset.
    """
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    parsed = datetime.fromisoformat(raw)
    if parsed.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset or 'Z'")
    return parsed.astimezone(UTC)
