"""OpenRouter's ``provider.max_price`` from satrouter's own quote.

OpenRouter routes a model to any of its providers, some dearer than the catalog's price. The
quote is made at one price per component (:func:`billing.pricing.bound_price`); sending that
price as ``provider.max_price`` makes OpenRouter refuse (rather than run) a provider that
would cost more than was quoted. Shape, as OpenRouter documents it: ``prompt`` and
``completion`` in USD per million tokens, ``request`` in USD per request, ``image`` in USD per
image.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from billing.pricing import ModelPrice

_PER_MILLION = Decimal(1_000_000)


def max_price_of(price: ModelPrice, *, images: bool) -> dict[str, float]:
    """The quote's prices in OpenRouter's units. ``image`` only when the request sends
    images: a limit on it would otherwise exclude providers that price images the request
    does not use."""
    # A float's shortest repr gives back the same decimal, which is what OpenRouter reads.
    limits = {
        "prompt": float(price.prompt * _PER_MILLION),
        "completion": float(price.completion * _PER_MILLION),
        "request": float(price.request),
    }
    if images:
        limits["image"] = float(price.image)
    return limits


def with_max_price(
    provider: Mapping[str, Any] | None, price: ModelPrice, *, images: bool
) -> dict[str, Any]:
    """The agent's own provider preferences, kept, with ``max_price`` set from the quote; where
    the agent asked for a lower limit of its own, the lower one stays."""
    merged = dict(provider or {})
    own = merged.get("max_price")
    limits: dict[str, Any] = dict(own) if isinstance(own, Mapping) else {}
    for key, value in max_price_of(price, images=images).items():
        theirs = limits.get(key)
        limits[key] = min(theirs, value) if isinstance(theirs, int | float) else value
    merged["max_price"] = limits
    return merged
