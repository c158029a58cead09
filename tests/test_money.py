"""Amounts and conversions: integer units, explicit rounding, no float anywhere."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import (
    Msat,
    NanoUsd,
    Rounding,
    msat_to_nusd,
    nusd_to_msat,
    parse_usd,
    round_fraction,
)

amounts = st.integers(min_value=-(10**15), max_value=10**15)
rates = st.decimals(min_value=Decimal("1000"), max_value=Decimal("10000000"), places=2)


def test_units_cannot_be_mixed() -> None:
    with pytest.raises(TypeError):
        Msat(1) + NanoUsd(1)  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Msat(1) < NanoUsd(2)  # type: ignore[operator]
    with pytest.raises(TypeError):
        Msat(1) + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        Msat(1.5)  # type: ignore[arg-type]
    assert Msat(1) != NanoUsd(1)
    assert Msat(5) == Msat(5) and hash(Msat(5)) == hash(Msat(5))


def test_amounts_are_immutable() -> None:
    amount = Msat(1)
    with pytest.raises(AttributeError):
        amount.value = 2  # type: ignore[misc]


def test_floats_are_refused_and_decimals_are_exact() -> None:
    with pytest.raises(TypeError):
        parse_usd(0.1)  # type: ignore[arg-type]
    assert NanoUsd.from_usd("0.0000001335", Rounding.UP) == NanoUsd(134)
    assert NanoUsd.from_usd("0.0000001335", Rounding.DOWN) == NanoUsd(133)
    assert NanoUsd.from_usd(Decimal("0.1"), Rounding.DOWN) == NanoUsd(100_000_000)
    with pytest.raises(ValueError, match="finite"):
        parse_usd(Decimal("NaN"))


def test_sat_rounding() -> None:
    assert Msat(1001).to_sat(Rounding.UP) == 2
    assert Msat(1001).to_sat(Rounding.DOWN) == 1
    assert Msat(2000).round_to_sat(Rounding.UP) == Msat(2000)


def test_known_conversion() -> None:
    # $1 at $100,000/BTC is 1,000 sat = 1,000,000 msat.
    assert nusd_to_msat(NanoUsd(10**9), Decimal(100_000), Rounding.UP) == Msat(1_000_000)
    assert msat_to_nusd(Msat(1_000_000), Decimal(100_000), Rounding.DOWN) == NanoUsd(10**9)


@given(amounts, amounts)
def test_addition_is_exact_and_typed(a: int, b: int) -> None:
    assert (Msat(a) + Msat(b)).value == a + b
    assert (NanoUsd(a) - NanoUsd(b)).value == a - b


@given(amounts, st.integers(1, 10**6), st.integers(1, 10**6))
def test_round_fraction_brackets_the_exact_value(n: int, num: int, den: int) -> None:
    exact = Fraction(n * num, den)
    up = round_fraction(exact, Rounding.UP)
    down = round_fraction(exact, Rounding.DOWN)
    assert down <= exact <= up
    assert up - down in (0, 1)
    assert (up == down) == (exact.denominator == 1)


@given(st.integers(0, 10**15), rates)
def test_conversion_rounds_in_the_named_direction(nusd: int, rate: Decimal) -> None:
    exact = Fraction(nusd * 100) / Fraction(rate)
    up = nusd_to_msat(NanoUsd(nusd), rate, Rounding.UP).value
    down = nusd_to_msat(NanoUsd(nusd), rate, Rounding.DOWN).value
    assert down <= exact <= up and up - down <= 1


@given(st.integers(0, 10**15), rates)
def test_round_trip_never_favours_the_agent(msat: int, rate: Decimal) -> None:
    # What the agent is paid back for msat, converted down and back down, never exceeds msat.
    back = nusd_to_msat(msat_to_nusd(Msat(msat), rate, Rounding.DOWN), rate, Rounding.DOWN)
    assert back <= Msat(msat)
    charged = nusd_to_msat(msat_to_nusd(Msat(msat), rate, Rounding.UP), rate, Rounding.UP)
    assert charged >= Msat(msat)


@given(st.integers(0, 10**12), st.integers(0, 100_000))
def test_markup_ratio_rounds_up(value: int, bps: int) -> None:
    marked = Msat(value).mul_ratio(bps, 10_000, Rounding.UP).value
    assert marked * 10_000 >= value * bps > (marked - 1) * 10_000 or value * bps == 0
