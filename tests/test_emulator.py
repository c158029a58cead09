"""Emulator behaviour the client tests do not already show."""

from __future__ import annotations

import json

import httpx
import pytest

from service.emulator import text
from service.emulator.faults import Fault, FaultTable, parse_fault
from service.upstream.errors import parse_retry_after

from .conftest import Emulator


def test_token_counting_is_deterministic_and_within_the_byte_bound() -> None:
    assert text.count_tokens("Hello there, agent!") == 5
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 🙂"}]
    assert text.prompt_tokens(messages) == 3 + (4 + 3) + (4 + 2)
    assert text.count_tokens("naïve café — ok") <= len("naïve café — ok".encode())


def test_reply_directives() -> None:
    user = [{"role": "user", "content": "[[reply:The answer is 42.]]"}]
    assert text.join_tokens(text.reply_tokens(user, None)) == "The answer is 42."
    assert len(text.reply_tokens([{"role": "user", "content": "[[tokens=7]]"}], None)) == 7
    assert len(text.reply_tokens([{"role": "user", "content": "[[tokens=70]]"}], 5)) == 5


def test_fault_rate_is_seeded_and_count_is_consumed() -> None:
    def draws(seed: int) -> list[bool]:
        table = FaultTable(seed)
        table.set("m", Fault(kind="bad_gateway", rate=0.5))
        return [table.draw("m") is not None for _ in range(200)]

    assert draws(1) == draws(1)
    assert 70 < sum(draws(1)) < 130
    table = FaultTable()
    table.set("m", Fault(kind="rate_limit", count=2))
    assert [table.draw("m") is not None for _ in range(4)] == [True, True, False, False]
    table.set("*", Fault(kind="unavailable"))
    assert table.draw("other") is not None


def test_fault_specs_are_validated() -> None:
    assert parse_fault("openai/gpt-4o=rate_limit:0.25")[1].rate == 0.25
    with pytest.raises(ValueError, match="unknown fault kind"):
        parse_fault("m=explode")
    with pytest.raises(ValueError, match="MODEL=KIND"):
        parse_fault("nothing")
    with pytest.raises(ValueError, match="rate"):
        Fault(kind="slow", rate=2)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_control_api_validates_and_applies(emulator: Emulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        bad = await http.post("/_emulator/faults", json={"model": "m", "kind": "explode"})
        assert bad.status_code == 400
        bad = await http.post("/_emulator/config", json={"nonsense": 1})
        assert bad.status_code == 400
        bad = await http.post("/_emulator/credits", json={"amount": "-5"})
        assert bad.status_code == 400
        ok = await http.post("/_emulator/credits", json={"amount": "2.5"})
        assert ok.json()["credits"] == 102.5
        ok = await http.post("/_emulator/faults", json={"model": "m", "kind": "slow", "delay": 1})
        assert ok.json()["faults"]["m"]["kind"] == "slow"
        cleared = await http.delete("/_emulator/faults")
        assert cleared.json()["faults"] == {}
        state = (await http.get("/_emulator/state")).json()
        assert "management_key" not in state["config"]


async def test_bad_requests_get_openrouter_shaped_errors(emulator: Emulator) -> None:
    headers = {"Authorization": "Bearer sk-or-v1-test"}
    async with httpx.AsyncClient(base_url=emulator.base_url, headers=headers) as http:
        response = await http.post("/chat/completions", content=b"{not json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 400
        response = await http.post("/chat/completions", json={"model": "x", "messages": []})
        assert response.status_code == 400
        response = await http.post(
            "/chat/completions",
            json={"model": "openai/gpt-4o", "messages": [{"role": "user"}], "max_tokens": -1},
        )
        assert response.status_code == 400
        response = await http.get("/generation", params={"id": "gen-nope"})
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "Generation not found"


def test_the_emulator_command_serves_with_start_up_faults() -> None:
    import subprocess
    import sys
    import time

    from benchmarks._report import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "emulator",
            "--port",
            str(port),
            "--fault",
            "openai/gpt-4o=rate_limit",
            "--generation-delay",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                models = httpx.get(base + "/api/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert models.status_code == 200
        assert len(models.json()["data"]) >= 18
        limited = httpx.post(
            base + "/api/v1/chat/completions",
            json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer sk-or-v1-x"},
        )
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
    finally:
        proc.terminate()
        proc.wait(10)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def test_tools_and_schemas_are_billed_as_prompt_tokens() -> None:
    assert text.prompt_tokens(ASK, [WEATHER]) > text.prompt_tokens(ASK) + 20
    call = {"role": "assistant", "tool_calls": [{"function": {"arguments": '{"a": 1}'}}]}
    assert text.prompt_tokens([*ASK, call]) > text.prompt_tokens([*ASK, {"role": "assistant"}])


async def _chat(emulator: Emulator, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            emulator.base_url + "/chat/completions",
            json={"model": "openai/gpt-4o-mini", **body},
            headers={"Authorization": "Bearer sk-or-v1-emulator"},
        )


async def test_tool_calls_as_tool_choice_allows(emulator: Emulator) -> None:
    answer = (await _chat(emulator, {"messages": ASK, "tools": [WEATHER]})).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {
        "city": "example",
        "unit": "celsius",
        "days": 1,
    }
    assert answer["usage"]["completion_tokens"] > 0
    # After the tool's result the model answers in text; "none" never calls.
    result = {"role": "tool", "tool_call_id": call["id"], "content": "18 C"}
    after = [*ASK, choice["message"], result]
    text_answer = (await _chat(emulator, {"messages": after, "tools": [WEATHER]})).json()
    assert text_answer["choices"][0]["message"]["content"].startswith("Here is")
    assert "tool_calls" not in text_answer["choices"][0]["message"]
    none = await _chat(emulator, {"messages": ASK, "tools": [WEATHER], "tool_choice": "none"})
    assert none.json()["choices"][0]["finish_reason"] == "stop"


async def test_streamed_tool_call_joins_to_valid_arguments(emulator: Emulator) -> None:
    response = await _chat(emulator, {"messages": ASK, "tools": [WEATHER], "stream": True})
    chunks = [
        json.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    first = deltas[0]["tool_calls"][0]
    assert first["id"].startswith("call_") and first["function"]["name"] == "get_weather"
    arguments = "".join(
        d["tool_calls"][0]["function"]["arguments"] for d in deltas if d.get("tool_calls")
    )
    assert json.loads(arguments)["city"] == "example"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == len(
        [d for d in deltas if d.get("tool_calls")]
    )


async def test_structured_output_is_valid_json(emulator: Emulator) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {}}},
        "required": ["title", "tags"],
    }
    formats = [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "t", "strict": True, "schema": schema}},
    ]
    for response_format in formats:
        for stream in (False, True):
            response = await _chat(
                emulator,
                {"messages": ASK, "response_format": response_format, "stream": stream},
            )
            if stream:
                content = "".join(
                    json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                    for line in response.text.splitlines()
                    if line.startswith("data: {") and json.loads(line[6:])["choices"]
                )
            else:
                content = response.json()["choices"][0]["message"]["content"]
            value = json.loads(content)
            assert isinstance(value, dict) and (
                "answer" in value or set(value) == {"title", "tags"}
            )


async def test_byok_answers_carry_only_openrouters_fee(emulator: Emulator) -> None:
    await emulator.control("POST", "/config", {"byok": True})
    usage = (await _chat(emulator, {"messages": ASK, "max_tokens": 10})).json()["usage"]
    assert usage["is_byok"] is True
    inference = usage["cost_details"]["upstream_inference_cost"]
    assert usage["cost"] == pytest.approx(inference * 0.05)
    bad = await emulator.control("GET", "/state")
    assert bad["config"]["byok"] is True


async def test_max_price_refuses_a_dearer_model(emulator: Emulator) -> None:
    cheap = {"provider": {"max_price": {"prompt": 0.15, "completion": 0.6}}}
    assert (await _chat(emulator, {"messages": ASK, **cheap})).status_code == 200
    low = {"provider": {"max_price": {"prompt": 0.1}}}  # gpt-4o-mini costs $0.15/M prompt
    refused = await _chat(emulator, {"messages": ASK, **low})
    assert refused.status_code == 404
    assert "max_price.prompt" in refused.json()["error"]["message"]
