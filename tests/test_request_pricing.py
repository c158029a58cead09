"""Every request priced whole: what the upstream bills as input, what multiplies or adds cost,
the completion bound, OpenRouter's max_price, and BYOK costs. Real HTTP, real LNbits, the
emulator recording what reached it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from service.http.keys import STORE

from .conftest import Service, until

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"  # $0.02/M prompt, $0.05/M completion, 16,384 max
VISION = "openai/gpt-4o-mini"  # prices images at $0.000217 each
HI = [{"role": "user", "content": "hi"}]
#: A 20 KB tool schema, as agents send them.
BIG_TOOL = {
    "type": "function",
    "function": {
        "name": "search_catalog",
        "description": "Search the catalog. " + "Lists every field of every record. " * 570,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


async def _quote(http: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await http.post("/v1/quote", json={"messages": HI, "model": CHEAP, **body})


async def test_tool_schemas_are_quoted(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        bare = (await _quote(http, max_tokens=50)).json()
        tooled = await _quote(http, max_tokens=50, tools=[BIG_TOOL])
        assert tooled.status_code == 200, tooled.text
        schema_bytes = len(json.dumps(BIG_TOOL).encode())
        assert schema_bytes > 20_000
        assert tooled.json()["prompt_tokens_max"] >= bare["prompt_tokens_max"] + schema_bytes - 100
        assert tooled.json()["cost_max_usd"] > bare["cost_max_usd"]
        # The L402 price of the chat endpoint counts them too.
        body = {"model": CHEAP, "messages": HI, "max_tokens": 50}
        plain = (await http.post("/v1/chat/completions", json=body)).json()
        with_tools = await http.post("/v1/chat/completions", json={**body, "tools": [BIG_TOOL]})
        assert with_tools.json()["price"]["prompt_tokens_max"] > (
            plain["price"]["prompt_tokens_max"] + 20_000
        )


async def test_a_tool_heavy_call_is_charged_within_its_quote(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 100)
        history = [
            *HI,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "search_catalog", "arguments": '{"q": "all"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": "no records match",
            },
        ]
        body = {"model": CHEAP, "messages": history, "tools": [BIG_TOOL], "max_tokens": 20}
        answer = await http.post("/v1/chat/completions", json=body, headers=account["auth"])
        assert answer.status_code == 200, answer.text
        task_id = answer.headers["X-Satrouter-Task"]
        billed = answer.json()["usage"]["prompt_tokens"]
        assert billed > 3_000  # the schema was billed as prompt tokens

        async def settled() -> Any:
            async with service.app[STORE].read() as tx:
                task = await tx.task(task_id)
            return task if task is not None and task.state == "reconciled" else None

        task = await until(settled)
    assert task.data["quote"]["prompt_tokens_max"] >= billed
    assert task.data["capped"] is False  # the operator paid nothing the agent did not
    assert (await service.check_ledger()).ok


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"n": 2}, "n"),
        ({"plugins": [{"id": "web"}]}, "plugins"),
        ({"web_search_options": {"search_context_size": "high"}}, "web_search_options"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"frobnicate": True}, "frobnicate"),
        ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
        ({"provider": {"max_price": {"prompt": "cheap"}}}, "max_price"),
        ({"max_tokens": 100, "reasoning": {"max_tokens": 100}}, "reasoning"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning"),
    ],
)
async def test_fields_that_add_unpriced_cost_are_refused(
    service: Service, extra: dict[str, Any], words: str
) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        for path in ("/v1/quote", "/v1/tasks", "/v1/chat/completions"):
            response = await http.post(path, json={"messages": HI, "model": CHEAP, **extra})
            assert response.status_code == 400, (path, response.text)
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert words in response.json()["detail"], response.json()
    assert service.emulator.state.counters["completions"] == 0


async def test_images_are_priced_from_the_catalog_or_refused(service: Service) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    look = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image, image]}]
    async with httpx.AsyncClient(base_url=service.url) as http:
        text_only = (await _quote(http, model=VISION, max_tokens=10)).json()
        seen = await _quote(http, model=VISION, max_tokens=10, messages=look)
        assert seen.status_code == 200, seen.text
        assert seen.json()["images"] == 2
        extra_usd = Decimal(seen.json()["cost_max_usd"]) - Decimal(text_only["cost_max_usd"])
        assert extra_usd >= 2 * Decimal("0.000217")
        no_price = await _quote(http, max_tokens=10, messages=look)  # CHEAP prices no images
        assert no_price.status_code == 400
        assert no_price.json()["type"].endswith("unpriceable_input")
        pdf = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:,x"}}
        refused = await _quote(
            http, model=VISION, max_tokens=10, messages=[{"role": "user", "content": [pdf]}]
        )
        assert refused.status_code == 400
        assert refused.json()["type"].endswith("unpriceable_input")


async def test_without_max_tokens_the_bound_is_the_models_own(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        own = (await _quote(http)).json()
        assert (own["completion_tokens_max"], own["completion_bound"]) == (16_384, "model_max")
        asked = (await _quote(http, max_tokens=50)).json()
        assert (asked["completion_tokens_max"], asked["completion_bound"]) == (50, "requested")
        over = (await _quote(http, max_tokens=100_000)).json()
        assert (over["completion_tokens_max"], over["completion_bound"]) == (16_384, "model_max")
        # perplexity/sonar publishes no completion limit: its whole context bounds it.
        sonar = (await _quote(http, model="perplexity/sonar")).json()
        assert (sonar["completion_tokens_max"], sonar["completion_bound"]) == (
            127_072,
            "context_length",
        )
        # A long reasoning budget fits under the model's own bound.
        thinking = await _quote(http, reasoning={"max_tokens": 8_000})
        assert thinking.status_code == 200, thinking.text


async def test_agent_fields_reach_openrouter_unchanged_and_satrouters_never(
    service: Service,
) -> None:
    params = {
        "tools": [BIG_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "search_catalog"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "reasoning": {"effort": "low"},
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 3,
        "user": "agent-7",
    }
    own = {"max_price_msat": 10_000_000, "allow_sensitive_cloud": False}
    # The chain is quoted at its dearest prices (qwen: $0.04/M prompt, $0.10/M completion);
    # the agent's own completion limit is lower, and still above CHEAP's $0.05.
    provider = {"order": ["DeepInfra"], "sort": "price", "max_price": {"completion": 0.07}}
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 200)
        body = {
            "model": CHEAP,
            "models": [CHEAP, "qwen/qwen-2.5-7b-instruct"],
            "messages": HI,
            "max_tokens": 30,
            "provider": provider,
        }
        via_chat = await http.post(
            "/v1/chat/completions", json={**body, **params, **own}, headers=account["auth"]
        )
        assert via_chat.status_code == 200, via_chat.text
        via_task = await http.post(
            "/v1/tasks", json={**body, **params, **own}, headers=account["auth"]
        )
        assert via_task.status_code == 201, via_task.text
        quoted = await http.post("/v1/quote", json={**body, **params, **own})
        assert quoted.status_code == 200, quoted.text

        async def two_calls() -> list[dict[str, Any]] | None:
            sent = [r["body"] for r in service.emulator.state.requests]
            return sent if len(sent) == 2 else None

        sent = await until(two_calls)
    for upstream in sent:
        for key, value in params.items():
            assert upstream[key] == value, key
        assert not set(own) & set(upstream)
        assert "consensus" not in upstream and "callback_url" not in upstream
        # The agent's preferences stay; max_price is the quote's, the agent's lower one kept.
        assert upstream["provider"]["order"] == ["DeepInfra"]
        assert upstream["provider"]["sort"] == "price"
        assert upstream["provider"]["max_price"] == {
            "prompt": 0.04,
            "completion": 0.07,
            "request": 0.0,
        }
        assert upstream["max_tokens"] == 30


async def test_a_dearer_provider_cannot_run_under_the_quote(service: Service) -> None:
    # The agent's own max_price is below the model's price: OpenRouter (the emulator) finds
    # no provider, nothing runs, and the whole payment comes back.
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 50)
        body = {
            "model": CHEAP,
            "messages": HI,
            "max_tokens": 10,
            "provider": {"max_price": {"prompt": 0.01}},
        }
        refused = await http.post("/v1/chat/completions", json=body, headers=account["auth"])
        assert refused.status_code == 502, refused.text
        me = (await http.get("/v1/accounts/me", headers=account["auth"])).json()
        assert me["balance_msat"] == 50_000
    assert service.emulator.state.counters["completions"] == 0
    assert (await service.check_ledger()).ok


async def test_byok_calls_are_charged_for_the_providers_cost_too(service: Service) -> None:
    service.emulator.state.config.byok = True
    async with httpx.AsyncClient(base_url=service.url) as http:
        task = (
            await http.post(
                "/v1/tasks",
                json={"messages": [{"role": "user", "content": "[[tokens=40]]"}], "model": VISION},
            )
        ).json()
        await service.pay(task["invoice"]["bolt11"])

        async def reconciled() -> Any:
            async with service.app[STORE].read() as tx:
                row = await tx.task(task["id"])
            return row if row is not None and row.state == "reconciled" else None

        row = await until(reconciled)
    record = next(iter(service.emulator.state.generations.values())).record
    assert record["is_byok"] is True
    fee, provider = record["total_cost"], record["upstream_inference_cost"]
    assert provider > fee * 10  # the fee alone would under-charge about twenty times
    assert row.data["provisional"] is False
    assert row.data["byok_cost_nusd"] == int(provider * 10**9)
    assert row.data["cost_nusd"] == int((fee + provider) * 10**9)
    # The charge is on both: its cost part is the whole cost at $100k/BTC (1,000 nUSD a msat).
    assert row.data["charge_msat"] - row.data["margin_msat"] == -(-row.data["cost_nusd"] // 1000)
    assert (await service.check_ledger()).ok
