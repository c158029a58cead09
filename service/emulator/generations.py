"""The cost accounting of a completion: its ``usage`` block, and the ``/generation`` record
that charges the credits."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from .pricing import cost_of, price_of
from .routing import Call
from .state import BYOK_FEE, EmulatorState, Generation


def new_generation_id() -> str:
    return f"gen-{int(time.time())}-{secrets.token_urlsafe(15)}"


def usage_of(state: EmulatorState, call: Call, completion_tokens: int) -> dict[str, Any]:
    cost = cost_of(call.entry, call.prompt_tokens, completion_tokens, call.images)
    usage: dict[str, Any] = {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": call.prompt_tokens + completion_tokens,
    }
    if call.entry is not None:  # OpenRouter adds cost accounting; a local server does not
        prompt_cost = cost_of(call.entry, call.prompt_tokens, 0, call.images) - price_of(
            call.entry, "request"
        )
        byok = state.config.byok
        usage.update(
            # BYOK: OpenRouter's fee only; the provider bills the operator's own key.
            cost=cost * BYOK_FEE if byok else cost,
            is_byok=byok,
            prompt_tokens_details={"cached_tokens": 0, "cache_write_tokens": 0, "audio_tokens": 0},
            cost_details={
                # OpenRouter fills this on every call: equal to cost unless BYOK
                "upstream_inference_cost": cost,
                "upstream_inference_prompt_cost": prompt_cost,
                "upstream_inference_completions_cost": cost - prompt_cost,
            },
            completion_tokens_details={"reasoning_tokens": 0, "image_tokens": 0},
        )
    return usage


def record(
    state: EmulatorState,
    gen_id: str,
    call: Call,
    completion_tokens: int,
    *,
    finish_reason: str,
    cancelled: bool = False,
) -> None:
    """Store the /generation record and charge the credits (BYOK: only OpenRouter's fee)."""
    inference = cost_of(call.entry, call.prompt_tokens, completion_tokens, call.images)
    byok = state.config.byok
    inline = inference * BYOK_FEE if byok else inference
    total = inline * state.config.generation_cost_ratio
    elapsed_ms = int((time.monotonic() - call.started) * 1000)
    state.usage += total
    state.counters["completions"] += 1
    state.generations[gen_id] = Generation(
        ready_at=time.monotonic() + state.config.generation_delay,
        record={
            "id": gen_id,
            "upstream_id": "chatcmpl-" + gen_id[-12:],
            "total_cost": total,
            "cache_discount": (inline - total) if total != inline else None,
            "upstream_inference_cost": (
                inference * state.config.generation_cost_ratio if byok else None
            ),
            "created_at": datetime.now(UTC).isoformat(),
            "model": call.model,
            "app_id": None,
            "streamed": call.stream,
            "cancelled": cancelled,
            "provider_name": call.provider,
            "latency": elapsed_ms,
            "moderation_latency": None,
            "generation_time": elapsed_ms,
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
            "tokens_prompt": call.prompt_tokens,
            "tokens_completion": completion_tokens,
            "native_tokens_prompt": call.prompt_tokens,
            "native_tokens_completion": completion_tokens,
            "native_tokens_reasoning": 0,
            "native_tokens_cached": 0,
            "num_search_results": None,
            "origin": "",
            "usage": total,
            "is_byok": byok,
            "num_media_prompt": call.images or None,
            "provider_responses": [
                {**a, "latency": elapsed_ms, "is_byok": byok} for a in call.attempts
            ],
        },
    )
