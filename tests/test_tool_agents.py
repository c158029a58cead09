"""A tool-calling agent end to end, through each way to pay: a prepaid key with the official
``openai`` SDK, the task API, L402; and a consensus stream that keeps the tool calls."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import Service, task_until

pytestmark = pytest.mark.lnbits
MODEL = "openai/gpt-4o-mini"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _valid_call(call: dict[str, Any]) -> dict[str, Any]:
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments["city"], str)
    assert arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
    return dict(arguments)


async def test_prepaid_agent_with_the_openai_sdk(service: Service) -> None:
    import openai

    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 500)
    sdk = openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=account["api_key"])
    try:
        first = await sdk.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=100
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        _valid_call(call.model_dump())
        # The agent runs the tool and sends the result back: the model answers in text.
        history = [
            *ASK,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 18}'},
        ]
        final = await sdk.chat.completions.create(
            model=MODEL, messages=history, tools=[WEATHER], max_tokens=100
        )
        assert final.choices[0].finish_reason == "stop"
        assert final.choices[0].message.content
        # Streaming: the SDK's deltas join into the same call.
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=100, stream=True
        )
        name, arguments, finish = "", "", None
        async for chunk in stream:
            if not chunk.choices:
                continue
            for delta in chunk.choices[0].delta.tool_calls or []:
                name += (delta.function.name or "") if delta.function else ""
                arguments += (delta.function.arguments or "") if delta.function else ""
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        assert _valid_call({"type": "function", "function": {"name": name, "arguments": arguments}})
    finally:
        await sdk.close()
    sent = [r["body"] for r in service.emulator.state.requests]
    assert all(body["tools"] == [WEATHER] for body in sent)
    assert (await service.check_ledger()).ok


async def test_task_api_agent_gets_the_tool_call(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        created = await http.post(
            "/v1/tasks",
            json={
                "model": MODEL,
                "messages": ASK,
                "tools": [WEATHER],
                "tool_choice": "required",
                "max_tokens": 100,
            },
        )
        assert created.status_code == 201, created.text
        task = created.json()
        await service.pay(task["invoice"]["bolt11"])
        done = await task_until(http, task, "reconciled")
    choice = done["result"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    _valid_call(choice["message"]["tool_calls"][0])
    assert done["charge_msat"] + done["change_msat"] == task["invoice"]["amount_msat"]
    assert (await service.check_ledger()).ok


async def test_l402_agent_gets_the_tool_call(service: Service) -> None:
    body = json.dumps(
        {"model": MODEL, "messages": ASK, "tools": [WEATHER], "max_tokens": 100}
    ).encode()
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=service.url) as http:
        challenge = await http.post("/v1/chat/completions", content=body, headers=headers)
        assert challenge.status_code == 402, challenge.text
        problem = challenge.json()
        paid = await service.pay(problem["invoice"])
        auth = {"Authorization": f"L402 {problem['macaroon']}:{paid['preimage']}"}
        answer = await http.post("/v1/chat/completions", content=body, headers={**headers, **auth})
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    _valid_call(choice["message"]["tool_calls"][0])
    assert (await service.check_ledger()).ok


async def test_a_consensus_stream_keeps_the_tool_calls(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        account = await service.funded_account(http, 500)
        streamed = await http.post(
            "/v1/chat/completions",
            headers=account["auth"],
            json={
                "consensus": {"models": [MODEL, "meta-llama/llama-3.1-8b-instruct"]},
                "messages": ASK,
                "tools": [WEATHER],
                "max_tokens": 100,
                "stream": True,
            },
        )
    assert streamed.status_code == 200, streamed.text
    chunks = [
        json.loads(line[6:])
        for line in streamed.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls") or []]
    assert len(calls) == 1 and calls[0]["index"] == 0
    _valid_call(calls[0])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert "consensus" in chunks[-1]
