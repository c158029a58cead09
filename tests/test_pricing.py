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
    bound_price,
    charge,
    input_tokens_upper_bound,
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


def test_input_bound_counts_everything_the_upstream_bills() -> None:
    hello = [{"role": "user", "content": "hi"}]
    bare = input_tokens_upper_bound(hello, [])
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"description": "é" * 10_000}}},
        },
    }
    with_tools = input_tokens_upper_bound(hello, [tool])
    assert with_tools - bare >= 20_000  # 10,000 two-byte characters, at least
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "function": {"name": "lookup", "arguments": "x" * 5_000}}],
    }
    result = {"role": "tool", "tool_call_id": "c1", "name": "lookup", "content": "y" * 7_000}
    assert input_tokens_upper_bound([*hello, call, result], []) - bare >= 12_000
    # A lone surrogate (which UTF-8 cannot encode) is still counted, never raised on.
    assert input_tokens_upper_bound([{"role": "user", "content": "\ud800"}], []) > bare - 2


def test_a_chain_is_bounded_by_its_dearest_component() -> None:
    a = ModelPrice(Decimal("0.000001"), Decimal("0.000004"), image=Decimal("0.002"))
    b = ModelPrice(
        Decimal("0.000002"),
        Decimal("0.000003"),
        Decimal("0.001"),
        reasoning=Decimal("0.000005"),
        cache_write=Decimal("0.0000025"),
    )
    flat = bound_price([a, b], 100)
    assert (flat.prompt, flat.completion, flat.request, flat.image) == (
        Decimal("0.000002"),
        Decimal("0.000005"),  # b's reasoning tokens are billed at its reasoning price
        Decimal("0.001"),
        Decimal("0.002"),
    )
    assert bound_price([a, b], 100, cache_writes=True).prompt == Decimal("0.0000025")
    tiered = ModelPrice(
        Decimal("0.000001"),
        Decimal("0.000002"),
        tiers=(PriceTier(200_000, Decimal("0.000003"), Decimal("0.000004")),),
    )
    assert bound_price([tiered], 250_000).prompt == Decimal("0.000003")
    assert bound_price([tiered], 250_000).tiers == ()


def test_images_are_priced_per_image() -> None:
    price = ModelPrice(Decimal(0), Decimal(0), image=Decimal("0.0002"))
    q = quote(
        "m", price, prompt_tokens_max=0, completion_tokens_max=1, rate=RATE, policy=POLICY, images=3
    )
    assert q.cost_max == NanoUsd(600_000) and q.images == 3
