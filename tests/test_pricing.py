"""Quotes and charges from the catalog's prices."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import Msat, NanoUsd
from billing.pricing import (
    ModelPrice,
    PriceTier,
    PricingPolicy,
    QuoteError,
    charge,
    prompt_tokens_upper_bound,
    quote,
)
from billing.rates import Rate

RATE = Rate(Decimal(100_000), "fixed", time.time())  # 1 USD = 1,000 sat
GPT4O = ModelPrice(Decimal("0.0000025"), Decimal("0.00001"))
POLICY = PricingPolicy(markup_bps=2000, fee=Msat(1000))


def test_quote_breakdown() -> None:
    q = quote(
        "openai/gpt-4o",
        GPT4O,
        prompt_tokens_max=1000,
        completion_tokens_max=500,
        rate=RATE,
        policy=POLICY,
    )
    # 1000 x 2.5e-6 + 500 x 1e-5 = $0.0075 = 7,500,000 nUSD -> 7,500 msat at $100k.
    assert q.cost_max == NanoUsd(7_500_000)
    assert q.cost_msat == Msat(7_500)
    assert q.markup == Msat(1_500)
    assert q.fee == Msat(1_000)
    assert q.total == Msat(10_000)
    assert q.rate is RATE and q.rate.source == "fixed"


def test_quote_total_is_rounded_up_to_whole_sats() -> None:
    q = quote("m", GPT4O, prompt_tokens_max=1, completion_tokens_max=1, rate=RATE, policy=POLICY)
    assert q.total.value % 1000 == 0
    assert q.total >= q.cost_msat + q.markup + q.fee


def test_per_request_price_and_tiers() -> None:
    price = ModelPrice(
        Decimal("0.000001"),
        Decimal("0.000002"),
        Decimal("0.005"),
        (PriceTier(200_000, Decimal("0.000002"), Decimal("0.000004")),),
    )
    assert price.cost(0, 0) == NanoUsd(5_000_000)
    assert price.cost(199_999, 0) == NanoUsd(5_000_000 + 199_999_000)
    assert price.cost(200_000, 0) == NanoUsd(5_000_000 + 400_000_000)


def test_variable_or_unknown_prices_cannot_be_quoted() -> None:
    with pytest.raises(QuoteError, match="variable or unknown"):
        quote(
            "openrouter/auto",
            None,
            prompt_tokens_max=10,
            completion_tokens_max=10,
            rate=RATE,
            policy=POLICY,
        )
    with pytest.raises(QuoteError, match="max_tokens"):
        quote(
            "m", GPT4O, prompt_tokens_max=10, completion_tokens_max=None, rate=RATE, policy=POLICY
        )


def test_free_model_pays_only_the_fee() -> None:
    free = ModelPrice(Decimal(0), Decimal(0))
    q = quote(
        "free", free, prompt_tokens_max=100, completion_tokens_max=100, rate=RATE, policy=POLICY
    )
    assert q.total == Msat(1_000)


def test_charge_gives_change_and_caps_at_what_was_paid() -> None:
    c = charge(NanoUsd(2_000_000), paid=Msat(10_000), rate=RATE, policy=POLICY)
    assert (c.cost_msat, c.markup, c.fee, c.total, c.change) == (
        Msat(2_000),
        Msat(400),
        Msat(1_000),
        Msat(3_400),
        Msat(6_600),
    )
    assert c.margin == Msat(1_400) and not c.capped
    over = charge(NanoUsd(20_000_000), paid=Msat(10_000), rate=RATE, policy=POLICY)
    assert over.capped and over.total == Msat(10_000) and over.change == Msat(0)


def test_prompt_bound_counts_bytes_and_overhead() -> None:
    assert prompt_tokens_upper_bound(["héllo"], 1) == 6 + 8 + 16


@given(st.integers(0, 10**6), st.integers(1, 10**5), st.integers(0, 10**6), st.integers(0, 10**5))
def test_actual_within_quote_never_charges_more_than_quoted(
    p_max: int, c_max: int, p_used: int, c_used: int
) -> None:
    q = quote(
        "m", GPT4O, prompt_tokens_max=p_max, completion_tokens_max=c_max, rate=RATE, policy=POLICY
    )
    actual = GPT4O.cost(min(p_used, p_max), min(c_used, c_max))
    c = charge(actual, paid=q.total, rate=RATE, policy=POLICY)
    assert not c.capped
    assert c.total + c.change == q.total
    assert c.change >= Msat(0)
