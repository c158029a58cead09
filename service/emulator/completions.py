"""``POST /chat/completions``, OpenRouter's and the local server's: the JSON answer, and the SSE
stream with OpenRouter's keep-alive comments, the usage chunk last and the stream faults."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from . import text
from .faults import Fault
from .generations import new_generation_id, record, usage_of
from .routing import (
    REFUSALS,
    Call,
    content,
    model_candidates,
    output,
    refusal_for,
    route,
    schemas,
)
from .state import LOCAL_MODELS, STATE, EmulatorState
from .wire import Refusal, authenticate, dumps, json_response, parse_chat, read_json, remember


async def chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        authenticate(request, state)
        body = await read_json(request)
        messages, max_tokens, stream = parse_chat(body)
        remember(state, request, body)
        if state.balance <= 0:
            raise Refusal(
                402,
                "This request requires more credits, or fewer max_tokens. You requested up to "
                f"{max_tokens or 0} tokens, but can only afford 0. To increase, visit "
                "https://openrouter.ai/settings/credits and add more credits",
                "payment_required",
            )
        candidates = model_candidates(body)
        call = await route(state, candidates, body, messages, max_tokens, stream)
        call = replace(call, logprobs=body.get("logprobs") is True)
    except Refusal as refusal:
        state.counters["errors"] += 1
        return refusal.response()
    if stream:
        return await stream_response(request, state, call)
    return await respond(state, call)


def _finish_reason(call: Call, produced: int) -> str:
    """``length`` when max_tokens cut the output short, else ``tool_calls`` or ``stop``."""
    if produced < call.full:
        return "length"
    return "tool_calls" if call.tool else "stop"


def _envelope(call: Call, gen_id: str, kind: str) -> dict[str, Any]:
    return {
        "id": gen_id,
        "provider": call.provider,
        "model": call.model,
        "object": kind,
        "created": int(time.time()),
    }


async def _latency(state: EmulatorState, call: Call, tokens: int) -> None:
    delay = state.config.ttft + (
        call.fault.delay if call.fault and call.fault.kind == "slow" else 0
    )
    if state.config.tokens_per_second > 0:
        delay += tokens / state.config.tokens_per_second
    if delay > 0:
        await asyncio.sleep(delay)


def _logprobs(call: Call) -> dict[str, Any]:
    logprob = math.log(max(text.token_confidence(call.messages, call.model), 1e-9))
    tokens = [p.strip() for p in call.pieces]
    return {
        "content": [
            {"token": t, "logprob": logprob, "bytes": list(t.encode()), "top_logprobs": []}
            for t in tokens
        ],
        "refusal": None,
    }


def _message(call: Call) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content(call),
        "refusal": None,
        "reasoning": None,
    }
    if call.tool:
        arguments = content(call)
        function = {**call.tool["function"], "arguments": arguments}
        message.update(content=None, tool_calls=[{**call.tool, "function": function}])
    return message


async def respond(state: EmulatorState, call: Call) -> web.Response:
    produced = len(call.pieces)
    await _latency(state, call, produced)
    gen_id = new_generation_id()
    finish = _finish_reason(call, produced)
    body = {
        **_envelope(call, gen_id, "chat.completion"),
        "choices": [
            {
                "logprobs": _logprobs(call) if call.logprobs else None,
                "finish_reason": finish,
                "native_finish_reason": finish,
                "index": 0,
                "message": _message(call),
            }
        ],
        "usage": usage_of(state, call, produced),
    }
    if call.entry is not None:
        record(state, gen_id, call, produced, finish_reason=finish)
    return json_response(body, headers={"X-Generation-Id": gen_id})


def _sse(data: Any) -> bytes:
    return b"data: " + dumps(data).encode() + b"\n\n"


async def stream_response(
    request: web.Request, state: EmulatorState, call: Call
) -> web.StreamResponse:
    gen_id = new_generation_id()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Generation-Id": gen_id,
        }
    )
    await response.prepare(request)
    openrouter = call.entry is not None and request.path.startswith("/api/")
    base = _envelope(call, gen_id, "chat.completion.chunk")
    sent = 0
    fault = call.fault
    try:
        if openrouter:
            await response.write(b": OPENROUTER PROCESSING\n\n")
        await _latency(state, call, 0)
        per_token = 1 / state.config.tokens_per_second if state.config.tokens_per_second else 0
        for i, piece in enumerate(call.pieces):
            if fault is not None and sent == fault.after_tokens:
                if fault.kind == "break_stream":
                    record(state, gen_id, call, sent, finish_reason="error", cancelled=True)
                    assert request.transport is not None
                    request.transport.close()  # drop the connection mid-stream
                    return response
                if fault.kind == "error_chunk":
                    await response.write(_sse(_error_chunk(base, fault)))
                    record(state, gen_id, call, sent, finish_reason="error")
                    await response.write_eof()
                    return response
            if per_token:
                await asyncio.sleep(per_token)
            delta = _delta(call, i, piece)
            await response.write(
                _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            )
            sent += 1
            if openrouter and i == 0:
                await response.write(b": OPENROUTER PROCESSING\n\n")
        finish = _finish_reason(call, sent)
        await response.write(
            _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        )
        await response.write(_sse({**base, "choices": [], "usage": usage_of(state, call, sent)}))
        await response.write(b"data: [DONE]\n\n")
        if call.entry is not None:
            record(state, gen_id, call, sent, finish_reason=finish)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        # The client went away: the stream is cancelled and billed for what was generated.
        state.counters["streams_cancelled"] += 1
        if call.entry is not None and gen_id not in state.generations:
            record(state, gen_id, call, sent, finish_reason="cancelled", cancelled=True)
        raise
    return response


def _delta(call: Call, i: int, piece: str) -> dict[str, Any]:
    """Stream delta ``i``: a piece of the content, or of the tool call's arguments (the
    first tool delta names the call, as OpenAI's and OpenRouter's streams do)."""
    if not call.tool:
        return {"role": "assistant", "content": piece}
    if i == 0:
        function = {"name": call.tool["function"]["name"], "arguments": piece}
        head = {"index": 0, "id": call.tool["id"], "type": "function", "function": function}
        return {"role": "assistant", "content": None, "tool_calls": [head]}
    return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}


def _error_chunk(base: dict[str, Any], fault: Fault) -> dict[str, Any]:
    return {
        **base,
        "error": {
            "code": fault.code,
            "message": "Provider returned error mid-stream",
            "metadata": {"error_type": "provider_overloaded"},
        },
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }


async def local_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = await read_json(request)
        messages, max_tokens, stream = parse_chat(body)
        remember(state, request, body)
        model = body.get("model")
        if model not in LOCAL_MODELS:
            return web.json_response(
                {
                    "error": {
                        "message": f'model "{model}" not found, try pulling it first',
                        "type": "api_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=404,
            )
        fault = state.faults.draw(model)
        if fault is not None and fault.kind in REFUSALS:
            raise await refusal_for(fault, model)
    except Refusal as refusal:
        return refusal.response()
    pieces, full, tool = output(body, messages, max_tokens, model)
    call = Call(
        model=model,
        entry=None,
        provider="local",
        messages=messages,
        prompt_tokens=text.prompt_tokens(messages, schemas(body)),
        pieces=pieces,
        full=full,
        tool=tool,
        fault=fault,
        attempts=[],
        started=time.monotonic(),
        stream=stream,
    )
    if stream:
        return await stream_response(request, state, call)
    return await respond(state, call)
