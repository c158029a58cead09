"""Amounts of money: integer millisatoshi and integer nano-dollars, never floats.

:class:`Msat` (1/1000 sat, 1e-11 BTC) and :class:`NanoUsd` (1e-9 USD, OpenRouter's credits) are
distinct types: adding one to the other raises ``TypeError`` at run time and fails the type
check, so a cost in dollars can never be charged as if it were sats. Conversions between them go
through a BTC/USD rate and always name their rounding direction; the rule is to round in the
operator's favour (up when the agent pays, down when the agent is paid) and say so at the call.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from fractions import Fraction
from typing import Any, Self

MSAT_PER_SAT = 1000
MSAT_PER_BTC = 100_000_000_000
NANO_PER_USD = 1_000_000_000


class Rounding(enum.Enum):
    """Which way a conversion that does not come out even goes."""

    UP = "up"  # towards +infinity: what the agent pays
    DOWN = "down"  # towards -infinity: what the agent is paid


def round_fraction(value: Fraction, rounding: Rounding) -> int:
    """An exact rational to an integer in the given direction."""
    floor = value.numerator // value.denominator
    if rounding is Rounding.DOWN or floor == value:
        return floor
    return floor + 1


class _Amount:
    """An integer amount in one unit. Immutable, hashable, ordered within its own unit."""

    __slots__ = ("value",)
    unit = ""
    value: int

    def __init__(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{type(self).__name__} takes an int, not {type(value).__name__}")
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _same(self, other: object) -> int:
        if not isinstance(other, _Amount) or type(other) is not type(self):
            raise TypeError(
                f"cannot combine {type(self).__name__} with {type(other).__name__}: "
                "convert explicitly at a rate"
            )
        return other.value

    def __add__(self, other: Self) -> Self:
        return type(self)(self.value + self._same(other))

    def __sub__(self, other: Self) -> Self:
        return type(self)(self.value - self._same(other))

    def __neg__(self) -> Self:
        return type(self)(-self.value)

    def __mul__(self, factor: int) -> Self:
        if not isinstance(factor, int) or isinstance(factor, bool):
            raise TypeError("amounts multiply by int only")
        return type(self)(self.value * factor)

    __rmul__ = __mul__

    def __lt__(self, other: Self) -> bool:
        return self.value < self._same(other)

    def __le__(self, other: Self) -> bool:
        return self.value <= self._same(other)

    def __gt__(self, other: Self) -> bool:
        return self.value > self._same(other)

    def __ge__(self, other: Self) -> bool:
        return self.value >= self._same(other)

    def __eq__(self, other: object) -> bool:
        same = isinstance(other, _Amount) and type(other) is type(self)
        return same and self.value == other.value  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.value))

    def __bool__(self) -> bool:
        return self.value != 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value})"

    def __str__(self) -> str:
        return f"{self.value} {self.unit}"

    def __reduce__(self) -> tuple[type[Self], tuple[int]]:
        return type(self), (self.value,)

    @classmethod
    def zero(cls) -> Self:
        return cls(0)

    def mul_ratio(self, numerator: int, denominator: int, rounding: Rounding) -> Self:
        """``self * numerator / denominator``, rounded as asked (for markups and shares)."""
        return type(self)(round_fraction(Fraction(self.value * numerator, denominator), rounding))


class Msat(_Amount):
    """Millisatoshi."""

    __slots__ = ()
    unit = "msat"

    @classmethod
    def from_sat(cls, sat: int) -> Msat:
        return cls(sat * MSAT_PER_SAT)

    def to_sat(self, rounding: Rounding) -> int:
        """Whole sats (an invoice amount); rounding says which way a remainder goes."""
        return round_fraction(Fraction(self.value, MSAT_PER_SAT), rounding)

    def round_to_sat(self, rounding: Rounding) -> Msat:
        return Msat.from_sat(self.to_sat(rounding))


class NanoUsd(_Amount):
    """Nano-dollars (1e-9 USD): OpenRouter prices and costs."""

    __slots__ = ()
    unit = "nUSD"

    @classmethod
    def from_usd(cls, usd: Decimal | int | str, rounding: Rounding) -> NanoUsd:
        """Dollars (exact Decimal, int or decimal string) to nano-dollars. Floats are refused."""
        return cls(round_fraction(Fraction(parse_usd(usd)) * NANO_PER_USD, rounding))

    def to_usd(self) -> Decimal:
        """Exact dollars (for display and for APIs that speak dollars)."""
        return Decimal(self.value) / NANO_PER_USD


def parse_usd(value: Decimal | int | str) -> Decimal:
    """A dollar amount from OpenRouter (price string, or a JSON number parsed as Decimal).

    Floats are refused: by the time a float exists, the exact value is already lost. Parse JSON
    with ``parse_float=Decimal`` instead.
    """
    if isinstance(value, (bool, float)):
        raise TypeError("dollar amounts must be Decimal, int or str, never float")
    if isinstance(value, (int, str)):
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"not a finite dollar amount: {value!r}")
    return value


def usd_per_btc_fraction(usd_per_btc: Decimal) -> Fraction:
    if not usd_per_btc.is_finite() or usd_per_btc <= 0:
        raise ValueError(f"BTC/USD rate must be positive, got {usd_per_btc}")
    return Fraction(usd_per_btc)


def nusd_to_msat(amount: NanoUsd, usd_per_btc: Decimal, rounding: Rounding) -> Msat:
    """Nano-dollars to msat at ``usd_per_btc`` (msat = nUSD * 1e11 / (1e9 * rate))."""
    rate = usd_per_btc_fraction(usd_per_btc)
    exact = Fraction(amount.value * MSAT_PER_BTC, NANO_PER_USD) / rate
    return Msat(round_fraction(exact, rounding))


def msat_to_nusd(amount: Msat, usd_per_btc: Decimal, rounding: Rounding) -> NanoUsd:
    """Msat to nano-dollars at ``usd_per_btc``."""
    rate = usd_per_btc_fraction(usd_per_btc)
    exact = Fraction(amount.value * NANO_PER_USD, MSAT_PER_BTC) * rate
    return NanoUsd(round_fraction(exact, rounding))
