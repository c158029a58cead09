"""The OpenRouter client against the emulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from aiohttp import web

from service.demo.loopback import serve
from service.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from service.emulator.faults import Fault
from service.upstream import errors
from service.upstream.openrouter import GenerationNotReady, OpenRouterClient

from .conftest import Emulator, start_emulator

CHEAP = "meta-llama/llama-3.1-8b-instruct"  # $0.00000002 prompt, $0.00000005 completion
BACKUP = "openai/gpt-4o-mini"
# 5 text tokens + 7 directive tokens + 4 per message + 3 per request = 19 prompt tokens.
HELLO = [{"role": "user", "content": "Hello there, agent! [[tokens=10]]"}]
HELLO_COST = Decimal("0.00000088")  # 19 x 0.00000002 + 10 x 0.00000005


async def test_chat_returns_text_usage_exact_cost_and_generation_id(
    client: OpenRouterClient,
) -> None:
    result = await client.chat({"model": CHEAP, "messages": HELLO})
    assert result.completion.model == CHEAP
    assert result.completion.text.startswith("Here is the emulated answer")
    usage = result.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (19, 10, 29)
    assert isinstance(usage.cost, Decimal)
    assert usage.cost == HELLO_COST
    assert result.generation_id == result.completion.id
    assert result.generation_id.startswith("gen-")
    assert result.raw["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


async def test_request_fields_and_attribution_headers_pass_through(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    provider = {"order": ["DeepInfra"], "data_collection": "deny", "zdr": True, "sort": "price"}
    await client.chat(
        {"model": CHEAP, "models": [CHEAP, BACKUP], "provider": provider, "messages": HELLO}
    )
    sent = (await emulator.control("GET", "/requests"))["requests"][-1]
    assert sent["body"]["provider"] == provider
    assert sent["body"]["models"] == [CHEAP, BACKUP]
    assert sent["body"]["stream"] is False
    assert sent["headers"]["HTTP-Referer"] == "https://agents.example"
    assert sent["headers"]["X-OpenRouter-Title"] == "satrouter tests"


async def test_models_array_falls_back_past_a_rate_limited_model(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    await emulator.control("POST", "/faults", {"model": CHEAP, "kind": "rate_limit"})
    result = await client.chat({"models": [CHEAP, BACKUP], "messages": HELLO})
    assert result.completion.model == BACKUP
    generation = await client.generation(result.generation_id, deadline=5)
    assert [p.status for p in generation.provider_responses or []] == [429, 200]


async def test_stream_skips_comments_and_surfaces_final_usage(
    client: OpenRouterClient,
) -> None:
    texts = []
    async with client.stream_chat({"model": CHEAP, "messages": HELLO}) as stream:
        async for chunk in stream:
            texts.append(chunk.text)
    blocking = await client.chat({"model": CHEAP, "messages": HELLO})
    assert "".join(texts) == blocking.completion.text
    assert stream.done
    assert stream.usage is not None
    assert stream.usage.completion_tokens == 10
    assert stream.usage.cost == HELLO_COST
    assert stream.generation_id is not None and stream.generation_id.startswith("gen-")


async def test_stream_comment_lines_are_really_sent(emulator: Emulator) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.post(
            emulator.base_url + "/chat/completions",
            json={"model": CHEAP, "messages": HELLO, "stream": True},
            headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        )
    assert response.text.startswith(": OPENROUTER PROCESSING\n\n")
    assert response.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(("code", "expected_class"), [(429, 429), ("server_error", 500)])
async def test_mid_stream_error_chunk_becomes_typed_error(
    client: OpenRouterClient, emulator: Emulator, code: int | str, expected_class: int
) -> None:
    emulator.state.faults.set(CHEAP, Fault(kind="error_chunk", after_tokens=2, code=code))
    received = []
    with pytest.raises(errors.StreamError) as caught:
        async with client.stream_chat({"model": CHEAP, "messages": HELLO}) as stream:
            async for chunk in stream:
                received.append(chunk.text)
    assert len(received) == 2
    assert caught.value.code == code
    assert caught.value.error_type == "provider_overloaded"
    assert caught.value.retryable
    assert caught.value.fallback_ok


async def test_broken_stream_is_a_transport_error(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    emulator.state.faults.set(CHEAP, Fault(kind="break_stream", after_tokens=3))
    with pytest.raises(errors.TransportError):
        async with client.stream_chat({"model": CHEAP, "messages": HELLO}) as stream:
            async for _ in stream:
                pass


async def test_leaving_a_stream_early_closes_the_upstream_connection(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    await emulator.control("POST", "/config", {"tokens_per_second": 50})
    async with client.stream_chat({"model": CHEAP, "messages": HELLO}) as stream:
        async for _ in stream:
            break
    for _ in range(100):
        if emulator.state.counters["streams_cancelled"]:
            break
        await asyncio.sleep(0.02)
    assert emulator.state.counters["streams_cancelled"] == 1
    (generation,) = emulator.state.generations.values()
    assert generation.record["cancelled"] is True
    assert generation.record["tokens_completion"] < 10


@pytest.mark.parametrize(
    ("kind", "error_class", "status", "error_type", "retry_after"),
    [
        ("rate_limit", errors.RateLimited, 429, "rate_limit_exceeded", 7.0),
        ("bad_gateway", errors.BadGateway, 502, "model_not_available", None),
        ("unavailable", errors.ServiceUnavailable, 503, "provider_overloaded", 7.0),
    ],
)
async def test_upstream_failures_are_typed_and_say_retry_and_fallback(
    client: OpenRouterClient,
    emulator: Emulator,
    kind: str,
    error_class: type[errors.UpstreamError],
    status: int,
    error_type: str,
    retry_after: float | None,
) -> None:
    emulator.state.faults.set(CHEAP, Fault(kind=kind, retry_after=7))  # type: ignore[arg-type]
    with pytest.raises(error_class) as caught:
        await client.chat({"model": CHEAP, "messages": HELLO})
    error = caught.value
    assert error.code == status
    assert error.error_type == error_type
    assert error.retry_after == retry_after
    assert error.retryable and error.fallback_ok
    assert error.model == CHEAP


async def test_timeout_fault_answers_408(client: OpenRouterClient, emulator: Emulator) -> None:
    emulator.state.faults.set(CHEAP, Fault(kind="timeout", delay=0.05))
    with pytest.raises(errors.RequestTimeout) as caught:
        await client.chat({"model": CHEAP, "messages": HELLO})
    assert caught.value.retryable


async def test_client_side_timeout_is_a_transport_error(emulator: Emulator) -> None:
    emulator.state.faults.set(CHEAP, Fault(kind="timeout", delay=5))
    async with OpenRouterClient(
        base_url=emulator.base_url, api_key=DEFAULT_API_KEY, timeout=0.3
    ) as short:
        started = time.monotonic()
        with pytest.raises(errors.TransportError) as caught:
            await short.chat({"model": CHEAP, "messages": HELLO})
    assert time.monotonic() - started < 3
    assert caught.value.error_type == "timeout"
    assert caught.value.retryable and caught.value.fallback_ok


async def test_unknown_model_is_a_bad_request_without_fallback(client: OpenRouterClient) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        await client.chat({"model": "nobody/nothing-1b", "messages": HELLO})
    assert "not a valid model ID" in caught.value.message
    assert not caught.value.retryable
    assert not caught.value.fallback_ok


async def test_bad_key_is_unauthorized(emulator: Emulator) -> None:
    async with OpenRouterClient(base_url=emulator.base_url, api_key="not-a-key") as bad:
        with pytest.raises(errors.Unauthorized):
            await bad.chat({"model": CHEAP, "messages": HELLO})


async def test_exhausted_credits_answer_402_and_no_fallback_helps(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    await emulator.control("POST", "/config", {"credits": "0"})
    with pytest.raises(errors.PaymentRequired) as caught:
        await client.chat({"models": [CHEAP, BACKUP], "messages": HELLO})
    assert caught.value.error_type == "payment_required"
    assert not caught.value.retryable
    assert not caught.value.fallback_ok


async def test_generation_is_polled_until_it_appears() -> None:
    emu, runner = await start_emulator(
        EmulatorConfig(generation_delay=0.6, generation_cost_ratio=Decimal("0.75"))
    )
    try:
        async with OpenRouterClient(base_url=emu.base_url, api_key=DEFAULT_API_KEY) as client:
            result = await client.chat({"model": CHEAP, "messages": HELLO})
            started = time.monotonic()
            generation = await client.generation(result.generation_id, deadline=10)
            waited = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert waited >= 0.5
    assert generation.id == result.generation_id
    assert generation.tokens_prompt == 19 and generation.tokens_completion == 10
    # The authoritative cost may differ from the inline one (cache discounts).
    assert generation.total_cost == HELLO_COST * Decimal("0.75")
    assert generation.cache_discount == HELLO_COST - generation.total_cost
    assert isinstance(generation.total_cost, Decimal)


async def test_generation_gives_up_at_the_deadline() -> None:
    emu, runner = await start_emulator(EmulatorConfig(generation_delay=60))
    try:
        async with OpenRouterClient(base_url=emu.base_url, api_key=DEFAULT_API_KEY) as client:
            result = await client.chat({"model": CHEAP, "messages": HELLO})
            started = time.monotonic()
            with pytest.raises(GenerationNotReady):
                await client.generation(result.generation_id, deadline=0.5)
            assert time.monotonic() - started < 2
    finally:
        await runner.cleanup()


async def test_credits_need_a_management_key(client: OpenRouterClient, emulator: Emulator) -> None:
    await client.chat({"model": CHEAP, "messages": HELLO})
    credits = await client.credits()
    assert credits.total_credits == Decimal(100)
    assert credits.total_usage == HELLO_COST
    assert credits.balance == Decimal(100) - HELLO_COST

    async with OpenRouterClient(base_url=emulator.base_url, api_key=DEFAULT_API_KEY) as normal:
        with pytest.raises(errors.Forbidden) as caught:
            await normal.credits()
    assert "OPENROUTER_MANAGEMENT_KEY" in caught.value.message
    assert "Only management keys" in caught.value.message


async def test_key_reports_usage(client: OpenRouterClient) -> None:
    await client.chat({"model": CHEAP, "messages": HELLO})
    info = await client.key()
    assert info.usage == HELLO_COST
    assert info.is_management_key is False


async def test_key_falls_back_to_the_older_auth_key_path() -> None:
    async def auth_key(request: web.Request) -> web.Response:
        return web.json_response({"data": {"label": "old", "usage": 1.5, "limit": None}})

    app = web.Application()
    app.router.add_get("/api/v1/auth/key", auth_key)
    runner, url = await serve(app)
    try:
        base = url + "/api/v1"
        async with OpenRouterClient(base_url=base, api_key="k") as client:
            info = await client.key()
    finally:
        await runner.cleanup()
    assert info.label == "old"
    assert info.usage == Decimal("1.5")


async def test_unreachable_upstream_is_a_transport_error() -> None:
    async with OpenRouterClient(base_url="http://127.0.0.1:9/api/v1", api_key="k") as client:
        with pytest.raises(errors.TransportError) as caught:
            await client.models()
    assert caught.value.fallback_ok


async def test_local_endpoint_speaks_openai_shapes_without_cost(emulator: Emulator) -> None:
    async with OpenRouterClient(base_url=emulator.url + "/local/v1") as local:
        result = await local.chat({"model": "llama3.2:3b", "messages": HELLO})
        assert result.completion.model == "llama3.2:3b"
        assert result.usage is not None and result.usage.cost is None
        assert result.usage.completion_tokens == 10
        async with local.stream_chat({"model": "llama3.2:3b", "messages": HELLO}) as stream:
            text = "".join([chunk.text async for chunk in stream])
        assert text == result.completion.text
        with pytest.raises(errors.NotFound):
            await local.chat({"model": CHEAP, "messages": HELLO})
