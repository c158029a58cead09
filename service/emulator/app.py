"""An offline stand-in for OpenRouter that speaks its exact shapes.

Routes (under ``/api/v1`` like the real service, so ``OPENROUTER_BASE_URL`` is the only change):
``POST /chat/completions`` (JSON, or SSE with ``: OPENROUTER PROCESSING`` keep-alives and the
usage chunk last), ``GET /models`` (the catalog the project ships), ``GET /generation?id=``
(404 until ``generation_delay`` has passed since the completion), ``GET /credits``
(management key only) and ``GET /key`` / ``GET /auth/key``.

An Ollama-style local OpenAI-compatible endpoint lives under ``/local/v1`` (free, no key).

The emulator-only control API under ``/_emulator`` sets faults, latency, delays and credits at
run time, and shows what requests arrived, so tests can check what the client sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from ..upstream.schemas import plain
from . import structured, text
from .faults import Fault, FaultTable

DEFAULT_MANAGEMENT_KEY = "sk-or-v1-emulator-management"
DEFAULT_API_KEY = "sk-or-v1-emulator"
LOCAL_MODELS = ("llama3.2:3b", "qwen2.5:7b-instruct")
#: What ``openrouter/auto`` picks in the emulator.
AUTO_PICK = "openai/gpt-4o-mini"
#: OpenRouter's fee on a BYOK request, as a fraction of the provider's cost.
BYOK_FEE = Decimal("0.05")


@dataclass(slots=True)
class EmulatorConfig:
    """Knobs settable at start-up and through ``POST /_emulator/config``."""

    generation_delay: float = 1.0  # seconds /generation answers 404 after a completion
    ttft: float = 0.0  # seconds to first token
    tokens_per_second: float = 0.0  # 0: instant
    credits: Decimal = Decimal("100")  # total_credits, USD
    generation_cost_ratio: Decimal = Decimal(1)  # /generation total_cost = inline cost x this
    #: Answer as a request served with the operator's own provider key: ``usage.cost`` and
    #: ``total_cost`` are only OpenRouter's fee, the provider's cost ``upstream_inference_cost``
    byok: bool = False
    management_key: str = DEFAULT_MANAGEMENT_KEY
    seed: int = 0
    catalog_path: Path | None = None


@dataclass(slots=True)
class _Generation:
    ready_at: float
    record: dict[str, Any]


@dataclass(slots=True)
class EmulatorState:
    config: EmulatorConfig
    catalog: dict[str, dict[str, Any]]
    catalog_body: dict[str, Any]
    faults: FaultTable
    usage: Decimal = Decimal(0)
    generations: dict[str, _Generation] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    counters: dict[str, int] = field(
        default_factory=lambda: {"completions": 0, "streams_cancelled": 0, "errors": 0}
    )

    @property
    def balance(self) -> Decimal:
        return self.config.credits - self.usage


STATE: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)


def load_catalog(path: Path | None = None) -> dict[str, Any]:
    if path is not None:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    source = resources.files("service.emulator").joinpath("catalog.json")
    return json.loads(source.read_text())  # type: ignore[no-any-return]


def create_app(config: EmulatorConfig | None = None) -> web.Application:
    config = config or EmulatorConfig()
    body = load_catalog(config.catalog_path)
    state = EmulatorState(
        config=config,
        catalog={m["id"]: m for m in body["data"]},
        catalog_body=body,
        faults=FaultTable(config.seed),
    )
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/api/v1/chat/completions", _chat)
    app.router.add_get("/api/v1/models", _models)
    app.router.add_get("/api/v1/generation", _generation)
    app.router.add_get("/api/v1/credits", _credits)
    app.router.add_get("/api/v1/key", _key)
    app.router.add_get("/api/v1/auth/key", _key)
    app.router.add_post("/local/v1/chat/completions", _local_chat)
    app.router.add_get("/local/v1/models", _local_models)
    app.router.add_get("/_emulator/state", _control_state)
    app.router.add_post("/_emulator/faults", _control_set_fault)
    app.router.add_delete("/_emulator/faults", _control_clear_faults)
    app.router.add_post("/_emulator/config", _control_config)
    app.router.add_post("/_emulator/credits", _control_add_credits)
    app.router.add_get("/_emulator/requests", _control_requests)
    return app


# -- helpers --------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(plain(value), separators=(",", ":"))


def _json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(value, status=status, headers=headers, dumps=_dumps)


class _Refusal(Exception):
    """An OpenRouter-shaped error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        code: int | str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or {}
        self.code = code if code is not None else status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.error_type:
            error["metadata"] = {"error_type": self.error_type}
        return {"error": error, "user_id": "user_emulator"}

    def response(self) -> web.Response:
        return _json_response(self.body(), status=self.status, headers=self.headers)


def _authenticate(request: web.Request, state: EmulatorState) -> bool:
    """True for the management key, False for a normal key; refuses anything else."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise _Refusal(401, "No auth credentials found", "unauthorized")
    if secrets.compare_digest(key, state.config.management_key):
        return True
    if key.startswith("sk-or-"):
        return False
    raise _Refusal(401, "User not found.", "unauthorized")


def _gen_id() -> str:
    return f"gen-{int(time.time())}-{secrets.token_urlsafe(15)}"


def _provider_name(model: str) -> str:
    return {"meta-llama": "DeepInfra", "qwen": "Together", "mistralai": "Mistral"}.get(
        model.split("/")[0], model.split("/")[0].capitalize()
    )


def _price(entry: dict[str, Any], key: str) -> Decimal:
    try:
        value = Decimal(str(entry["pricing"].get(key, "0")))
    except InvalidOperation:
        return Decimal(0)
    return max(value, Decimal(0))


def _cost(entry: dict[str, Any] | None, prompt: int, completion: int, images: int = 0) -> Decimal:
    if entry is None:
        return Decimal(0)
    prompt_price, completion_price = _price(entry, "prompt"), _price(entry, "completion")
    for override in entry["pricing"].get("overrides") or []:
        if prompt >= override.get("min_prompt_tokens", 0):
            prompt_price = Decimal(str(override.get("prompt", prompt_price)))
            completion_price = Decimal(str(override.get("completion", completion_price)))
    return (
        prompt * prompt_price
        + completion * completion_price
        + images * _price(entry, "image")
        + _price(entry, "request")
    )


_PER_MILLION = {"prompt": Decimal(1_000_000), "completion": Decimal(1_000_000)}


def _over_max_price(entry: dict[str, Any], body: dict[str, Any]) -> str | None:
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
        if _price(entry, key) * _PER_MILLION.get(key, Decimal(1)) > ceiling:
            return str(key)
    return None


def _images(messages: list[dict[str, Any]]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
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
_REFUSALS = frozenset({"rate_limit", "bad_gateway", "unavailable", "timeout"})


async def _fail(fault: Fault, model: str) -> _Refusal:
    """The error answer a pre-response fault produces."""
    if fault.kind == "rate_limit":
        return _Refusal(
            429,
            f"{model} is temporarily rate-limited upstream. Please retry shortly.",
            "rate_limit_exceeded",
            _rate_limit_headers(fault.retry_after),
        )
    if fault.kind == "unavailable":
        return _Refusal(
            503,
            "No endpoints found that can handle the requested parameters.",
            "provider_overloaded",
            {"Retry-After": f"{fault.retry_after:g}"},
        )
    if fault.kind == "timeout":
        await asyncio.sleep(fault.delay)
        return _Refusal(408, f"{model} timed out", "timeout")
    return _Refusal(502, f"{model} is down or returned an invalid response", "model_not_available")


# -- chat -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
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


def _output(
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


def _content(call: _Call) -> str:
    return "".join(call.pieces)


def _parse_chat(body: Any) -> tuple[list[dict[str, Any]], int | None, bool]:
    if not isinstance(body, dict):
        raise _Refusal(400, "Request body must be a JSON object", "invalid_request")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise _Refusal(400, "messages: expected a non-empty array of objects", "invalid_request")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _Refusal(400, "max_tokens: expected a positive integer", "invalid_request")
    return messages, max_tokens, bool(body.get("stream"))


_REMEMBERED_HEADERS = ("HTTP-Referer", "X-OpenRouter-Title", "X-Title", "Accept")


def _remember(state: EmulatorState, request: web.Request, body: Any) -> None:
    """Keep what the client sent (minus its key) for ``GET /_emulator/requests``."""
    headers = {h: request.headers[h] for h in _REMEMBERED_HEADERS if h in request.headers}
    state.requests.append(
        {"path": request.path, "headers": headers, "body": body, "at": time.time()}
    )


async def _read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Refusal(400, "Request body is not valid JSON", "invalid_request") from None


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        _authenticate(request, state)
        body = await _read_json(request)
        messages, max_tokens, stream = _parse_chat(body)
        _remember(state, request, body)
        if state.balance <= 0:
            raise _Refusal(
                402,
                "This request requires more credits, or fewer max_tokens. You requested up to "
                f"{max_tokens or 0} tokens, but can only afford 0. To increase, visit "
                "https://openrouter.ai/settings/credits and add more credits",
                "payment_required",
            )
        candidates = _candidates(body)
        call = await _route(state, candidates, body, messages, max_tokens, stream)
        call = replace(call, logprobs=body.get("logprobs") is True)
    except _Refusal as refusal:
        state.counters["errors"] += 1
        return refusal.response()
    if stream:
        return await _stream(request, state, call)
    return await _respond(state, call)


def _candidates(body: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if isinstance(body.get("model"), str):
        out.append(body["model"])
    models = body.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise _Refusal(400, "models: expected an array of model ids", "invalid_request")
    for model in models or []:
        if model not in out:
            out.append(model)
    if not out:
        raise _Refusal(400, "No models provided", "invalid_request")
    return out


async def _route(
    state: EmulatorState,
    candidates: list[str],
    body: dict[str, Any],
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    stream: bool,
) -> _Call:
    """Like OpenRouter's ``models`` fallback: the first candidate that does not fail serves."""
    attempts: list[dict[str, Any]] = []
    last: _Refusal | None = None
    started = time.monotonic()
    for model in candidates:
        served = AUTO_PICK if model == "openrouter/auto" else model
        entry = state.catalog.get(served)
        if entry is None:
            last = _Refusal(400, f"{model} is not a valid model ID", "invalid_model")
            attempts.append({"model": model, "status": 400})
            continue
        if (over := _over_max_price(entry, body)) is not None:
            last = _Refusal(
                404,
                f"No endpoints found for {served} within provider.max_price.{over}",
                "no_endpoints",
            )
            attempts.append({"model": served, "status": 404})
            continue
        fault = state.faults.draw(served)
        if fault is not None and fault.kind in _REFUSALS:
            last = await _fail(fault, served)
            attempts.append(
                {"provider_name": _provider_name(served), "status": last.status, "model": served}
            )
            continue
        if fault is not None and not stream and fault.kind in {"break_stream", "error_chunk"}:
            last = _Refusal(502, f"{served} returned an invalid response", "model_not_available")
            attempts.append({"provider_name": _provider_name(served), "status": 502})
            continue
        limit = max_tokens
        top = entry.get("top_provider") or {}
        if limit is None and isinstance(top.get("max_completion_tokens"), int):
            limit = top["max_completion_tokens"]
        prompt = text.prompt_tokens(messages, _schemas(body))
        context = entry.get("context_length")
        if isinstance(context, int) and prompt > context:
            last = _Refusal(
                400,
                f"This endpoint's maximum context length is {context} tokens. However, you "
                f"requested about {prompt} tokens. Please reduce the length of the messages.",
                "context_length_exceeded",
            )
            attempts.append({"model": served, "status": 400})
            continue
        attempts.append({"provider_name": _provider_name(served), "status": 200})
        pieces, full, tool = _output(body, messages, limit, served)
        return _Call(
            model=served,
            entry=entry,
            provider=_provider_name(served),
            messages=messages,
            prompt_tokens=prompt,
            pieces=pieces,
            full=full,
            fault=fault,
            attempts=attempts,
            started=started,
            stream=stream,
            tool=tool,
            images=_images(messages),
        )
    assert last is not None
    raise last


def _schemas(body: dict[str, Any]) -> list[Any]:
    """What the provider renders into the prompt besides the messages."""
    out: list[Any] = [*(body.get("tools") or []), *(body.get("functions") or [])]
    if isinstance(body.get("response_format"), dict):
        out.append(body["response_format"])
    return out


def _usage(state: EmulatorState, call: _Call, completion_tokens: int) -> dict[str, Any]:
    cost = _cost(call.entry, call.prompt_tokens, completion_tokens, call.images)
    usage: dict[str, Any] = {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": call.prompt_tokens + completion_tokens,
    }
    if call.entry is not None:  # OpenRouter adds cost accounting; a local server does not
        prompt_cost = _cost(call.entry, call.prompt_tokens, 0, call.images) - _price(
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


def _finish_reason(call: _Call, produced: int) -> str:
    """``length`` when max_tokens cut the output short, else ``tool_calls`` or ``stop``."""
    if produced < call.full:
        return "length"
    return "tool_calls" if call.tool else "stop"


def _envelope(call: _Call, gen_id: str, kind: str) -> dict[str, Any]:
    return {
        "id": gen_id,
        "provider": call.provider,
        "model": call.model,
        "object": kind,
        "created": int(time.time()),
    }


def _record(
    state: EmulatorState,
    gen_id: str,
    call: _Call,
    completion_tokens: int,
    *,
    finish_reason: str,
    cancelled: bool = False,
) -> None:
    """Store the /generation record and charge the credits (BYOK: only OpenRouter's fee)."""
    inference = _cost(call.entry, call.prompt_tokens, completion_tokens, call.images)
    byok = state.config.byok
    inline = inference * BYOK_FEE if byok else inference
    total = inline * state.config.generation_cost_ratio
    elapsed_ms = int((time.monotonic() - call.started) * 1000)
    state.usage += total
    state.counters["completions"] += 1
    state.generations[gen_id] = _Generation(
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


async def _latency(state: EmulatorState, call: _Call, tokens: int) -> None:
    delay = state.config.ttft + (
        call.fault.delay if call.fault and call.fault.kind == "slow" else 0
    )
    if state.config.tokens_per_second > 0:
        delay += tokens / state.config.tokens_per_second
    if delay > 0:
        await asyncio.sleep(delay)


def _logprobs(call: _Call) -> dict[str, Any]:
    logprob = math.log(max(text.token_confidence(call.messages, call.model), 1e-9))
    tokens = [p.strip() for p in call.pieces]
    return {
        "content": [
            {"token": t, "logprob": logprob, "bytes": list(t.encode()), "top_logprobs": []}
            for t in tokens
        ],
        "refusal": None,
    }


def _message(call: _Call) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": _content(call),
        "refusal": None,
        "reasoning": None,
    }
    if call.tool:
        arguments = _content(call)
        function = {**call.tool["function"], "arguments": arguments}
        message.update(content=None, tool_calls=[{**call.tool, "function": function}])
    return message


async def _respond(state: EmulatorState, call: _Call) -> web.Response:
    produced = len(call.pieces)
    await _latency(state, call, produced)
    gen_id = _gen_id()
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
        "usage": _usage(state, call, produced),
    }
    if call.entry is not None:
        _record(state, gen_id, call, produced, finish_reason=finish)
    return _json_response(body, headers={"X-Generation-Id": gen_id})


def _sse(data: Any) -> bytes:
    return b"data: " + _dumps(data).encode() + b"\n\n"


async def _stream(request: web.Request, state: EmulatorState, call: _Call) -> web.StreamResponse:
    gen_id = _gen_id()
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
                    _record(state, gen_id, call, sent, finish_reason="error", cancelled=True)
                    assert request.transport is not None
                    request.transport.close()  # drop the connection mid-stream
                    return response
                if fault.kind == "error_chunk":
                    await response.write(_sse(_error_chunk(base, fault)))
                    _record(state, gen_id, call, sent, finish_reason="error")
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
        await response.write(_sse({**base, "choices": [], "usage": _usage(state, call, sent)}))
        await response.write(b"data: [DONE]\n\n")
        if call.entry is not None:
            _record(state, gen_id, call, sent, finish_reason=finish)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        # The client went away: the stream is cancelled and billed for what was generated.
        state.counters["streams_cancelled"] += 1
        if call.entry is not None and gen_id not in state.generations:
            _record(state, gen_id, call, sent, finish_reason="cancelled", cancelled=True)
        raise
    return response


def _delta(call: _Call, i: int, piece: str) -> dict[str, Any]:
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


# -- other OpenRouter endpoints --------------------------------------------------------------


async def _models(request: web.Request) -> web.Response:
    return _json_response(request.app[STATE].catalog_body)


async def _generation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        _authenticate(request, state)
        gen_id = request.query.get("id")
        if not gen_id:
            raise _Refusal(400, "id: required", "invalid_request")
        generation = state.generations.get(gen_id)
        if generation is None or time.monotonic() < generation.ready_at:
            raise _Refusal(404, "Generation not found", "not_found")
    except _Refusal as refusal:
        return refusal.response()
    return _json_response({"data": generation.record})


async def _credits(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        if not _authenticate(request, state):
            raise _Refusal(403, "Only management keys can perform this operation", "forbidden")
    except _Refusal as refusal:
        return refusal.response()
    return _json_response(
        {"data": {"total_credits": state.config.credits, "total_usage": state.usage}}
    )


async def _key(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        management = _authenticate(request, state)
    except _Refusal as refusal:
        return refusal.response()
    key = request.headers["Authorization"].split(" ", 1)[1]
    return _json_response(
        {
            "data": {
                "label": f"{key[:9]}...{key[-3:]}",
                "limit": None,
                "limit_remaining": None,
                "limit_reset": None,
                "usage": state.usage,
                "usage_daily": state.usage,
                "usage_weekly": state.usage,
                "usage_monthly": state.usage,
                "is_free_tier": False,
                "is_management_key": management,
                "expires_at": None,
                "rate_limit": {"requests": -1, "interval": "10s"},
            }
        }
    )


# -- the local (Ollama-style) endpoint -------------------------------------------------------


async def _local_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = await _read_json(request)
        messages, max_tokens, stream = _parse_chat(body)
        _remember(state, request, body)
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
        if fault is not None and fault.kind in _REFUSALS:
            raise await _fail(fault, model)
    except _Refusal as refusal:
        return refusal.response()
    pieces, full, tool = _output(body, messages, max_tokens, model)
    call = _Call(
        model=model,
        entry=None,
        provider="local",
        messages=messages,
        prompt_tokens=text.prompt_tokens(messages, _schemas(body)),
        pieces=pieces,
        full=full,
        tool=tool,
        fault=fault,
        attempts=[],
        started=time.monotonic(),
        stream=stream,
    )
    if stream:
        return await _stream(request, state, call)
    return await _respond(state, call)


async def _local_models(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1735689600, "owned_by": "library"}
                for m in LOCAL_MODELS
            ],
        }
    )


# -- control API ------------------------------------------------------------------------------


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"code": 400, "message": message}}, status=400)


async def _control_state(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = {f.name: getattr(state.config, f.name) for f in fields(state.config)}
    config.pop("management_key")
    config["catalog_path"] = str(config["catalog_path"]) if config["catalog_path"] else None
    return _json_response(
        {
            "credits": state.config.credits,
            "usage": state.usage,
            "balance": state.balance,
            "faults": state.faults.as_dict(),
            "counters": state.counters,
            "generations": len(state.generations),
            "config": config,
        }
    )


async def _control_set_fault(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
        model = body.pop("model")
        state.faults.set(str(model), Fault(**body))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return _bad(f"fault: {exc}")
    return _json_response({"faults": state.faults.as_dict()})


async def _control_clear_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.faults.clear(request.query.get("model"))
    return _json_response({"faults": state.faults.as_dict()})


_SETTABLE: dict[str, Callable[[Any], Any]] = {
    "generation_delay": float,
    "ttft": float,
    "tokens_per_second": float,
    "generation_cost_ratio": lambda v: Decimal(str(v)),
    "byok": lambda v: v if isinstance(v, bool) else _not_a_bool(v),
    "credits": lambda v: Decimal(str(v)),
}


def _not_a_bool(value: Any) -> bool:
    raise ValueError(f"expected true or false, got {value!r}")


async def _control_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
        updates = {k: _SETTABLE[k](v) for k, v in body.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
        return _bad(f"config: unknown or invalid setting: {exc}")
    for key, value in updates.items():
        setattr(state.config, key, value)
    return await _control_state(request)


async def _control_add_credits(request: web.Request) -> web.Response:
    """Add USD credits, as a purchase would."""
    state = request.app[STATE]
    try:
        amount = Decimal(str((await request.json())["amount"]))
        if not amount.is_finite() or amount <= 0:
            raise ValueError("amount must be positive")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
        return _bad(f"credits: {exc}")
    state.config.credits += amount
    return await _control_state(request)


async def _control_requests(request: web.Request) -> web.Response:
    return _json_response({"requests": list(request.app[STATE].requests)})
