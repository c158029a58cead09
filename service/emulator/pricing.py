"""What a call costs at the catalog's prices, and whether a request's price ceiling allows it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


def price_of(entry: dict[str, Any], key: str) -> Decimal:
    try:
        value = Decimal(str(entry["pricing"].get(key, "0")))
    except InvalidOperation:
        return Decimal(0)
    return max(value, Decimal(0))


def cost_of(entry: dict[str, Any] | None, prompt: int, completion: int, images: int = 0) -> Decimal:
    if entry is None:
        return Decimal(0)
    prompt_price, completion_price = price_of(entry, "prompt"), price_of(entry, "completion")
    for override in entry["pricing"].get("overrides") or []:
        if prompt >= override.get("min_prompt_tokens", 0):
            prompt_price = Decimal(str(override.get("prompt", prompt_price)))
            completion_price = Decimal(str(override.get("completion", completion_price)))
    return (
        prompt * prompt_price
        + completion * completion_price
        + images * price_of(entry, "image")
        + price_of(entry, "request")
    )


_PER_MILLION = {"prompt": Decimal(1_000_000), "completion": Decimal(1_000_000)}


def over_max_price(entry: dict[str, Any], body: dict[str, Any]) -> str | None:
    """The first ``provider.max_price`` limit the model's price is above, if any (the emulator
    has one provider per model, at the catalog's price)."""
    provider = body.get("provider")
    limits = provider.get("max_price") if isinstance(provider, dict) else None
    if not isinstance(limits, dict):
        return None
    for key, limit in limits.items():
        if isinstance(limit, bool) or not isinstance(limit, int | float | Decimal | str):
            continue
        try:
            ceiling = Decimal(str(limit))
        except InvalidOperation:
            continue
        if price_of(entry, key) * _PER_MILLION.get(key, Decimal(1)) > ceiling:
            return str(key)
    return None


def count_images(messages: list[dict[str, Any]]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
