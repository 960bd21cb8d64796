"""UTC metering periods: keys, boundaries and counter lifetimes (platform §9.2, §9.3).

A day starts at 00:00Z and a month on the 1st at 00:00Z. Redis counter keys name a period
as ``d20260422`` (day) or ``m202604`` (month).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

Period = Literal["day", "month"]
PERIODS: Final[tuple[str, ...]] = get_args(Period)

# Lifetime of a Redis counter per period: 2 days for day keys, 40 days for month keys.
COUNTER_TTL_S: Final[dict[str, int]] = {"day": 2 * 86400, "month": 40 * 86400}


def check_period(value: str) -> Period:
    """Return ``value`` as a :data:`Period`; raises ``ValueError`` for anything else."""
    if value == "day":
        return "day"
    if value == "month":
        return "month"
    raise ValueError(f"period must be 'day' or 'month', got {value!r}")


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: periods are computed on aware UTC datetimes")
    return at.astimezone(UTC)


def period_start(period: Period, at: datetime) -> datetime:
    """The first instant of the UTC day or month holding ``at``."""
    at = _utc(at)
    if period == "day":
        return datetime(at.year, at.month, at.day, tzinfo=UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def period_end(period: Period, at: datetime) -> datetime:
    """The first instant after the UTC day or month holding ``at`` (exclusive bound)."""
    start = period_start(period, at)
    if period == "day":
        return start + timedelta(days=1)
    if start.month == 12:
        return datetime(start.year + 1, 1, 1, tzinfo=UTC)
    return datetime(start.year, start.month + 1, 1, tzinfo=UTC)


def period_bounds(period: Period, at: datetime) -> tuple[datetime, datetime]:
    """``(start, end)`` of the period holding ``at``; ``start <= t < end``."""
    return period_start(period, at), period_end(period, at)


def period_key(period: Period, at: datetime) -> str:
    """The Redis key part of the period holding ``at``: ``d20260422`` or ``m202604``."""
    start = period_start(period, at)
    if period == "day":
        return start.strftime("d%Y%m%d")
    return start.strftime("m%Y%m")


def seconds_until_end(period: Period, at: datetime) -> int:
    """Whole seconds from ``at`` to the end of its period, rounded up and at least 1."""
    remaining = (period_end(period, at) - _utc(at)).total_seconds()
    return max(1, math.ceil(remaining))
