"""OpenRouter's response shapes, as pydantic models.

Models allow extra fields: OpenRouter adds fields often, and a response we pass on to an agent
must lose nothing. Amounts of money are ``Decimal``; JSON is parsed with ``parse_float=Decimal``
(see :func:`loads`) so a cost like ``0.0001335`` is never rounded through a binary float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict


def loads(data: str | bytes) -> Any:
    """Parse JSON keeping every non-integer number as an exact ``Decimal``."""
    return json.loads(data, parse_float=Decimal)


def plain(value: Any) -> Any:
    """A parsed body made JSON-serializable again for passing on (Decimals become numbers);
    never used for accounting, which reads the Decimals."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Open):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal | None = None
    is_byok: bool | None = None
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None
    cost_details: dict[str, Any] | None = None

    @property
    def byok_cost(self) -> Decimal | None:
        """The provider's cost of a call run on the operator's own provider key (BYOK):
        ``cost`` is then only OpenRouter's fee. None otherwise (OpenRouter fills
        ``upstream_inference_cost`` on other calls too, equal to ``cost``)."""
        if self.is_byok is not True:
            return None
        value = (self.cost_details or {}).get("upstream_inference_cost")
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            return None
        return Decimal(value)


class Message(_Open):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(_Open):
    index: int = 0
    message: Message
    finish_reason: str | None = None


class ChatCompletion(_Open):
    id: str
    model: str
    provider: str | None = None
    choices: list[Choice]
    usage: Usage | None = None

    @property
    def text(self) -> str:
        return (self.choices[0].message.content or "") if self.choices else ""


class ChunkChoice(_Open):
    index: int = 0
    delta: dict[str, Any] = {}
    finish_reason: str | None = None


class ChatChunk(_Open):
    id: str | None = None
    model: str | None = None
    choices: list[ChunkChoice] = []
    usage: Usage | None = None

    @property
    def text(self) -> str:
        content = self.choices[0].delta.get("content") if self.choices else None
        return content if isinstance(content, str) else ""


class ProviderResponse(_Open):
    provider_name: str | None = None
    status: int | None = None
    latency: Decimal | None = None


class Generation(_Open):
    """``GET /generation`` ``data``: the authoritative cost of one completion."""

    id: str
    total_cost: Decimal
    usage: Decimal | None = None
    cache_discount: Decimal | None = None
    upstream_inference_cost: Decimal | None = None
    model: str | None = None
    provider_name: str | None = None
    created_at: str | None = None
    latency: Decimal | None = None
    generation_time: Decimal | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    tokens_prompt: int | None = None
    tokens_completion: int | None = None
    native_tokens_prompt: int | None = None
    native_tokens_completion: int | None = None
    native_tokens_reasoning: int | None = None
    native_tokens_cached: int | None = None
    streamed: bool | None = None
    cancelled: bool | None = None
    is_byok: bool | None = None
    provider_responses: list[ProviderResponse] | None = None

    @property
    def byok_cost(self) -> Decimal:
        """What the operator's own provider key paid (BYOK; ``total_cost`` is then only
        OpenRouter's fee), zero otherwise."""
        if self.is_byok is not True or self.upstream_inference_cost is None:
            return Decimal(0)
        return self.upstream_inference_cost


class Credits(_Open):
    total_credits: Decimal
    total_usage: Decimal

    @property
    def balance(self) -> Decimal:
        return self.total_credits - self.total_usage


class KeyInfo(_Open):
    label: str | None = None
    limit: Decimal | None = None
    limit_remaining: Decimal | None = None
    limit_reset: str | None = None
    usage: Decimal = Decimal(0)
    usage_daily: Decimal | None = None
    usage_weekly: Decimal | None = None
    usage_monthly: Decimal | None = None
    is_free_tier: bool | None = None
    is_management_key: bool | None = None
    expires_at: str | None = None
