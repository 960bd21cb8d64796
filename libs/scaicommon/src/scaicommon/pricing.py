"""Prices and cost arithmetic (platform §1.2, §9.1).

Money is a :class:`~decimal.Decimal` in code and a decimal string with at most 6 fractional
digits on the wire, never a float. Cost = ``units × price / per_units``, rounded half-up to 6
decimal places. ScaiEcho prices audio per minute (``per_units = 60000`` ms); ScaiSpeak prices
text per 1,000 characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final, Literal

Backend = Literal["A", "B"]
MONEY_QUANTUM: Final = Decimal("0.000001")
MICROS: Final = 1_000_000


def parse_money(value: str | int | Decimal, *, name: str = "price") -> Decimal:
    """Parse a non-negative decimal string (or int/Decimal) with at most 6 fractional digits.

    Floats are refused on purpose: money never passes through binary floating point.
    Raises ``ValueError`` naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"{name} must be a decimal string, got {type(value).__name__}")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ValueError(f"{name} must be a decimal string, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite decimal >= 0, got {value!r}")
    if amount != amount.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP):
        raise ValueError(f"{name} may have at most 6 fractional digits, got {value!r}")
    return amount


def round_money(amount: Decimal) -> Decimal:
    """Round half-up to 6 decimal places."""
    return amount.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal) -> str:
    """A decimal string with at most 6 fractional digits and no exponent (``"0.007275"``)."""
    text = f"{round_money(amount):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def to_micros(amount: Decimal) -> int:
    """Money in integer micro-units (the Redis ``cost_micros`` counters)."""
    return int(round_money(amount) * MICROS)


def from_micros(micros: int) -> Decimal:
    """Integer micro-units back to money."""
    return round_money(Decimal(micros) / MICROS)


@dataclass(frozen=True)
class Pricing:
    """The price of a module's unit on backends A and B.

    ``price_a`` and ``price_b`` are the price of ``per_units`` units of ``unit``.
    """

    unit: str
    per_units: int
    price_a: Decimal
    price_b: Decimal

    def __post_init__(self) -> None:
        if self.per_units <= 0:
            raise ValueError("per_units must be positive")
        object.__setattr__(self, "price_a", parse_money(self.price_a, name="price_a"))
        object.__setattr__(self, "price_b", parse_money(self.price_b, name="price_b"))

    @classmethod
    def per_audio_minute(cls, price_a: str | Decimal, price_b: str | Decimal) -> Pricing:
        """ScaiEcho: ``audio_ms`` per minute (``<PREFIX>_PRICE_PER_AUDIO_MINUTE_A/_B``)."""
        return cls(
            "audio_ms",
            60_000,
            parse_money(price_a, name="price_a"),
            parse_money(price_b, name="price_b"),
        )

    @classmethod
    def per_1k_chars(cls, price_a: str | Decimal, price_b: str | Decimal) -> Pricing:
        """ScaiSpeak: ``chars`` per 1,000 characters (``<PREFIX>_PRICE_PER_1K_CHARS_A/_B``)."""
        return cls(
            "chars",
            1_000,
            parse_money(price_a, name="price_a"),
            parse_money(price_b, name="price_b"),
        )

    @classmethod
    def free(cls, unit: str) -> Pricing:
        """Zero prices (the default when none are configured)."""
        return cls(unit, 1, Decimal(0), Decimal(0))

    def price(self, backend: str | None) -> Decimal:
        """The price of ``backend``; with no backend resolved yet, the higher of A and B."""
        if backend is None:
            return max(self.price_a, self.price_b)
        if backend == "A":
            return self.price_a
        if backend == "B":
            return self.price_b
        raise ValueError(f"backend must be 'A' or 'B', got {backend!r}")

    def cost(self, units: int, backend: str | None) -> Decimal:
        """``units × price / per_units``, rounded half-up to 6 places."""
        if units < 0:
            raise ValueError("units must be >= 0")
        return round_money(Decimal(units) * self.price(backend) / Decimal(self.per_units))
