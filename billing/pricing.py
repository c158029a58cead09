"""Quotes and charges.

A *quote* is the most a request can cost, fixed before the agent pays:

    cost_max = prompt_bound x prompt_price + completion_bound x completion_price
               + images x image_price + request_price                                     (USD)
    cost_msat = cost_max at the current BTC/USD rate, rounded up
    total = cost_msat + markup (rounded up) + fixed fee, rounded up to a whole sat

The invoice is for ``total``. After the call, the *charge* recomputes the same formula from the
actual cost (from OpenRouter's ``/generation``) at the quote's rate, capped at what was paid; the
rest is the agent's change. Every rounding goes the operator's way, and never by more than one
unit per step.

A model whose price is variable or unknown has no :class:`ModelPrice` and cannot be quoted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .money import Msat, NanoUsd, Rounding, nusd_to_msat, round_fraction
from .rates import Rate

#: Tokens added per message (role, separators) and per request on top of the text's bytes.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 16
#: Tokens added per tool definition or output schema: providers render them into the prompt
#: inside a template of their own (a namespace, a type declaration, an instruction).
SCHEMA_OVERHEAD_TOKENS = 32


class QuoteError(Exception):
    """The request cannot be priced (variable price, no completion limit, ...)."""


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Prices that apply from ``min_prompt_tokens`` prompt tokens on (OpenRouter ``overrides``)."""

    min_prompt_tokens: int
    prompt: Decimal
    completion: Decimal


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Exact USD prices of one model: per prompt token, per completion token, per request, per
    input image; reasoning tokens (billed as completion) and cache writes (billed as prompt)
    where the catalog prices them apart."""

    prompt: Decimal
    completion: Decimal
    request: Decimal = Decimal(0)
    tiers: tuple[PriceTier, ...] = ()
    image: Decimal = Decimal(0)
    reasoning: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)

    def token_prices(self, prompt_tokens: int) -> tuple[Decimal, Decimal]:
        """The highest (prompt, completion) prices that may apply for this many prompt tokens."""
        prompt, completion = self.prompt, self.completion
        for tier in self.tiers:
            if prompt_tokens >= tier.min_prompt_tokens:
                prompt = max(prompt, tier.prompt)
                completion = max(completion, tier.completion)
        return prompt, completion

    def cost(self, prompt_tokens: int, completion_tokens: int, images: int = 0) -> NanoUsd:
        """Cost of a call with these token counts, rounded up to the nano-dollar."""
        if prompt_tokens < 0 or completion_tokens < 0 or images < 0:
            raise ValueError("token counts cannot be negative")
        prompt, completion = self.token_prices(prompt_tokens)
        usd = (
            Fraction(prompt) * prompt_tokens
            + Fraction(completion) * completion_tokens
            + Fraction(self.image) * images
            + Fraction(self.request)
        )
        return NanoUsd(round_fraction(usd * 1_000_000_000, Rounding.UP))


def bound_price(
    prices: Sequence[ModelPrice], prompt_tokens: int, *, cache_writes: bool = False
) -> ModelPrice:
    """One flat price that none of ``prices`` exceeds for up to ``prompt_tokens`` prompt tokens:
    each component's highest, long-prompt tiers resolved, reasoning tokens priced as the
    completion tokens they are billed as, and cache writes (when the request asks for them)
    as prompt tokens. A fallback chain is quoted at this price, and OpenRouter's
    ``provider.max_price`` is set from it, so no model or provider of the chain can run dearer
    than the quote."""
    if not prices:
        raise QuoteError("nothing to price")
    prompt = completion = request = image = Decimal(0)
    for price in prices:
        p, c = price.token_prices(prompt_tokens)
        if cache_writes:
            p = max(p, price.cache_write)
        prompt = max(prompt, p)
        completion = max(completion, c, price.reasoning)
        request = max(request, price.request)
        image = max(image, price.image)
    return ModelPrice(prompt, completion, request, image=image)


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def utf8_size(text: str) -> int:
    # surrogatepass: a lone surrogate still counts (3 bytes) rather than raising
    return len(text.encode("utf-8", "surrogatepass"))


def input_tokens_upper_bound(messages: Sequence[Mapping[str, Any]], schemas: Sequence[Any]) -> int:
    """An upper bound on the prompt tokens of a request, for any byte-level tokenizer: one
    token per UTF-8 byte of the canonical JSON of every message as sent (text and parts,
    names, ``tool_calls`` and their arguments, ``tool`` results) and of every schema the
    provider renders into the prompt (each tool definition, each output schema), plus a
    fixed overhead per message, per schema and per request. JSON only adds bytes to the
    strings it holds (quotes, escapes), so no string is counted short."""
    total = REQUEST_OVERHEAD_TOKENS
    for message in messages:
        total += utf8_size(canonical_json(message)) + MESSAGE_OVERHEAD_TOKENS
    for schema in schemas:
        total += utf8_size(canonical_json(schema)) + SCHEMA_OVERHEAD_TOKENS
    return total


def prompt_tokens_upper_bound(texts: Iterable[str], messages: int) -> int:
    """An upper bound on prompt tokens for any byte-level tokenizer: one token per UTF-8 byte
    at most, plus per-message and per-request overhead."""
    return (
        sum(len(t.encode("utf-8")) for t in texts)
        + messages * MESSAGE_OVERHEAD_TOKENS
        + REQUEST_OVERHEAD_TOKENS
    )


@dataclass(frozen=True, slots=True)
class PricingPolicy:
    """The operator's terms: a markup in basis points on cost and a fixed fee per request."""

    markup_bps: int = 2000
    fee: Msat = Msat(1000)  # noqa: RUF009 (immutable value object)

    def __post_init__(self) -> None:
        if self.markup_bps < 0 or self.fee < Msat(0):
            raise ValueError("markup and fee cannot be negative")

    def markup_on(self, cost: Msat) -> Msat:
        return cost.mul_ratio(self.markup_bps, 10_000, Rounding.UP)


@dataclass(frozen=True, slots=True)
class Quote:
    """The maximum price of one request, with everything needed to audit it later."""

    model: str
    prompt_tokens_max: int
    completion_tokens_max: int
    cost_max: NanoUsd
    rate: Rate
    cost_msat: Msat
    markup: Msat
    fee: Msat
    total: Msat  # the invoice amount: whole sats
    #: where completion_tokens_max comes from: "requested" (the caller's max_tokens),
    #: "model_max" (the model's own completion limit), "context_length" (no completion
    #: limit published: the whole context), "local" (a local model: free, any bound is safe)
    completion_bound: str = "requested"
    images: int = 0
    #: the prices the quote was made at (None for a sum of quotes)
    price: ModelPrice | None = None

    @property
    def markup_bps(self) -> int:
        return 0 if not self.cost_msat else round(self.markup.value * 10_000 / self.cost_msat.value)


def quote(
    model: str,
    price: ModelPrice | None,
    *,
    prompt_tokens_max: int,
    completion_tokens_max: int | None,
    rate: Rate,
    policy: PricingPolicy,
    images: int = 0,
    completion_bound: str = "requested",
) -> Quote:
    """The maximum price of one request. Raises :class:`QuoteError` if it cannot be priced."""
    if price is None:
        raise QuoteError(f"{model} has a variable or unknown price and cannot be quoted")
    if completion_tokens_max is None or completion_tokens_max <= 0:
        raise QuoteError(f"{model}: set max_tokens; the model publishes no completion limit")
    cost_max = price.cost(prompt_tokens_max, completion_tokens_max, images)
    cost_msat = nusd_to_msat(cost_max, rate.usd_per_btc, Rounding.UP)
    markup = policy.markup_on(cost_msat)
    total = (cost_msat + markup + policy.fee).round_to_sat(Rounding.UP)
    return Quote(
        model=model,
        prompt_tokens_max=prompt_tokens_max,
        completion_tokens_max=completion_tokens_max,
        cost_max=cost_max,
        rate=rate,
        cost_msat=cost_msat,
        markup=markup,
        fee=policy.fee,
        total=total,
        completion_bound=completion_bound,
        images=images,
        price=price,
    )


@dataclass(frozen=True, slots=True)
class Charge:
    """What a reconciled request costs the agent, and the change it gets back."""

    cost: NanoUsd
    cost_msat: Msat
    markup: Msat
    fee: Msat
    total: Msat  # what the agent pays: revenue
    change: Msat  # paid - total
    capped: bool  # the actual cost exceeded the quote; the operator absorbs the difference

    @property
    def margin(self) -> Msat:
        """Revenue less the cost of the call at the quote's rate."""
        return self.total - self.cost_msat


def charge(actual_cost: NanoUsd, *, paid: Msat, rate: Rate, policy: PricingPolicy) -> Charge:
    """The final charge for an actual cost at the quote's rate, capped at what was paid."""
    if actual_cost < NanoUsd(0):
        raise ValueError("a cost cannot be negative")
    cost_msat = nusd_to_msat(actual_cost, rate.usd_per_btc, Rounding.UP)
    markup = policy.markup_on(cost_msat)
    total = cost_msat + markup + policy.fee
    capped = total > paid
    if capped:
        total = paid
    return Charge(
        cost=actual_cost,
        cost_msat=cost_msat,
        markup=markup,
        fee=policy.fee,
        total=total,
        change=paid - total,
        capped=capped,
    )


def combine(quotes: Sequence[Quote], model: str) -> Quote:
    """One quote for several calls priced separately (consensus): the sum of each part."""
    if not quotes:
        raise QuoteError("nothing to combine")
    first = quotes[0]
    return Quote(
        model=model,
        prompt_tokens_max=max(q.prompt_tokens_max for q in quotes),
        completion_tokens_max=max(q.completion_tokens_max for q in quotes),
        cost_max=NanoUsd(sum(q.cost_max.value for q in quotes)),
        rate=first.rate,
        cost_msat=Msat(sum(q.cost_msat.value for q in quotes)),
        markup=Msat(sum(q.markup.value for q in quotes)),
        fee=Msat(sum(q.fee.value for q in quotes)),
        total=Msat(sum(q.total.value for q in quotes)),
        completion_bound=",".join(dict.fromkeys(q.completion_bound for q in quotes)),
        images=max(q.images for q in quotes),
    )
