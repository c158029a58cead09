"""Which model serves a chat request: OpenRouter's ``models`` fallback, price ceilings,
context limits and the faults set for a model; and what the serving model answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from . import structured, text
from .faults import Fault
from .pricing import count_images, over_max_price
from .state import AUTO_PICK, EmulatorState
from .wire import Refusal


def provider_name(model: str) -> str:
    return {"meta-llama": "DeepInfra", "qwen": "Together", "mistralai": "Mistral"}.get(
        model.split("/")[0], model.split("/")[0].capitalize()
    )


def _rate_limit_headers(retry_after: float) -> dict[str, str]:
    reset_ms = int((time.time() + retry_after) * 1000)
    return {
        "Retry-After": f"{retry_after:g}",
        "X-RateLimit-Limit": "20",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset_ms),
    }


#: Faults that answer with an error instead of a completion.
REFUSALS = frozenset({"rate_limit", "bad_gateway", "unavailable", "timeout"})


async def refusal_for(fault: Fault, model: str) -> Refusal:
    """The error answer a pre-response fault produces."""
    if fault.kind == "rate_limit":
        return Refusal(
            429,
            f"{model} is temporarily rate-limited upstream. Please retry shortly.",
            "rate_limit_exceeded",
            _rate_limit_headers(fault.retry_after),
        )
    if fault.kind == "unavailable":
        return Refusal(
            503,
            "No endpoints found that can handle the requested parameters.",
            "provider_overloaded",
            {"Retry-After": f"{fault.retry_after:g}"},
        )
    if fault.kind == "timeout":
        await asyncio.sleep(fault.delay)
        return Refusal(408, f"{model} timed out", "timeout")
    return Refusal(502, f"{model} is down or returned an invalid response", "model_not_available")


@dataclass(slots=True)
class Call:
    model: str
    entry: dict[str, Any] | None  # None for local models (free)
    provider: str
    messages: list[dict[str, Any]]
    prompt_tokens: int
    #: the output as stream deltas of one token each: the reply's text, or a tool call's
    #: arguments; cut to max_tokens
    pieces: list[str]
    full: int  # how many pieces the output has uncut
    fault: Fault | None
    attempts: list[dict[str, Any]]
    started: float
    stream: bool
    logprobs: bool = False
    tool: dict[str, Any] = field(default_factory=dict)  # the tool call made, if any
    images: int = 0


def output(
    body: dict[str, Any], messages: list[dict[str, Any]], limit: int | None, model: str
) -> tuple[list[str], int, dict[str, Any]]:
    """What the model answers: (pieces cut to ``limit``, uncut count, the tool call or {})."""
    call = structured.tool_call(body, messages)
    if call:
        pieces = structured.pieces(call["function"]["arguments"])
    else:
        tokens = text.reply_tokens(messages, None, model)
        reply = text.join_tokens(tokens)
        as_json = structured.json_reply(body.get("response_format"), reply)
        if as_json is not None:
            pieces = structured.pieces(as_json)
        else:
            pieces = [text.piece(tokens, i) for i in range(len(tokens))]
    full = len(pieces)
    return (pieces[: max(0, limit)] if limit is not None else pieces), full, call


def content(call: Call) -> str:
    return "".join(call.pieces)


def model_candidates(body: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if isinstance(body.get("model"), str):
        out.append(body["model"])
    models = body.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise Refusal(400, "models: expected an array of model ids", "invalid_request")
    for model in models or []:
        if model not in out:
            out.append(model)
    if not out:
        raise Refusal(400, "No models provided", "invalid_request")
    return out


async def route(
    state: EmulatorState,
    candidates: list[str],
    body: dict[str, Any],
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    stream: bool,
) -> Call:
    """Like OpenRouter's ``models`` fallback: the first candidate that does not fail serves."""
    attempts: list[dict[str, Any]] = []
    last: Refusal | None = None
    started = time.monotonic()
    for model in candidates:
        served = AUTO_PICK if model == "openrouter/auto" else model
        entry = state.catalog.get(served)
        if entry is None:
            last = Refusal(400, f"{model} is not a valid model ID", "invalid_model")
            attempts.append({"model": model, "status": 400})
            continue
        if (over := over_max_price(entry, body)) is not None:
            last = Refusal(
                404,
                f"No endpoints found for {served} within provider.max_price.{over}",
                "no_endpoints",
            )
            attempts.append({"model": served, "status": 404})
            continue
        fault = state.faults.draw(served)
        if fault is not None and fault.kind in REFUSALS:
            last = await refusal_for(fault, served)
            attempts.append(
                {"provider_name": provider_name(served), "status": last.status, "model": served}
            )
            continue
        if fault is not None and not stream and fault.kind in {"break_stream", "error_chunk"}:
            last = Refusal(502, f"{served} returned an invalid response", "model_not_available")
            attempts.append({"provider_name": provider_name(served), "status": 502})
            continue
        limit = max_tokens
        top = entry.get("top_provider") or {}
        if limit is None and isinstance(top.get("max_completion_tokens"), int):
            limit = top["max_completion_tokens"]
        prompt = text.prompt_tokens(messages, schemas(body))
        context = entry.get("context_length")
        if isinstance(context, int) and prompt > context:
            last = Refusal(
                400,
                f"This endpoint's maximum context length is {context} tokens. However, you "
                f"requested about {prompt} tokens. Please reduce the length of the messages.",
                "context_length_exceeded",
            )
            attempts.append({"model": served, "status": 400})
            continue
        attempts.append({"provider_name": provider_name(served), "status": 200})
        pieces, full, tool = output(body, messages, limit, served)
        return Call(
            model=served,
            entry=entry,
            provider=provider_name(served),
            messages=messages,
            prompt_tokens=prompt,
            pieces=pieces,
            full=full,
            fault=fault,
            attempts=attempts,
            started=started,
            stream=stream,
            tool=tool,
            images=count_images(messages),
        )
    assert last is not None
    raise last


def schemas(body: dict[str, Any]) -> list[Any]:
    """What the provider renders into the prompt besides the messages."""
    out: list[Any] = [*(body.get("tools") or []), *(body.get("functions") or [])]
    if isinstance(body.get("response_format"), dict):
        out.append(body["response_format"])
    return out
