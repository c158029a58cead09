"""Errors as the official ``openai`` SDK shows them, against the real service: the exception
text names the reason (OpenAI's ``error`` object next to the RFC 9457 fields), and a refusal
that no retry can fix reaches the server once, not once per SDK retry."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from billing.budget import Budgets, Cap
from billing.money import Msat
from service.http.keys import ENGINE
from service.tasks.engine import EngineConfig

from .conftest import CHEAP, HELLO, Service

pytestmark = pytest.mark.lnbits
ROUTE = "/v1/chat/completions"


def _served(service: Service, status: int) -> float:
    """Requests the server answered on the chat route with ``status`` (its own metrics)."""
    metrics = service.app[ENGINE].metrics
    assert metrics is not None
    labels = {"route": ROUTE, "method": "POST", "status": str(status)}
    return metrics.registry.get_sample_value("satrouter_http_requests_total", labels) or 0.0


def _sdk(service: Service, api_key: str) -> openai.AsyncOpenAI:
    # The SDK's own defaults (two retries) are what agents run with.
    return openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=api_key)


async def test_the_sdk_names_the_reason_of_a_bad_request(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = (await http.post("/v1/accounts")).json()
    sdk = _sdk(service, account["api_key"])
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model=CHEAP, messages=HELLO, max_tokens=-5)
    await sdk.close()
    error = caught.value
    assert "max_tokens" in str(error), str(error)  # not just "Error code: 400"
    assert error.code == "invalid_request"
    assert error.type == "invalid_request_error"
    assert error.param == "max_tokens"
    body = error.response.json()  # the problem fields stay
    assert body["type"] == "urn:satrouter:problem:invalid_request"
    assert body["status"] == 400


async def test_the_sdk_names_a_short_balance_and_does_not_retry_it(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = (await http.post("/v1/accounts")).json()  # nothing deposited
    sdk = _sdk(service, account["api_key"])
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.chat.completions.create(model=CHEAP, messages=HELLO, max_tokens=20)
    await sdk.close()
    error = caught.value
    assert error.status_code == 402
    assert "the balance is 0 msat" in str(error), str(error)
    assert error.code == "insufficient_balance"
    assert error.type == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert _served(service, 402) == 1


async def test_the_sdk_names_a_bad_key(service: Service) -> None:
    sdk = _sdk(service, "sk-sat-forged")
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk.chat.completions.create(model=CHEAP, messages=HELLO, max_tokens=20)
    await sdk.close()
    assert "unknown API key" in str(caught.value), str(caught.value)
    assert caught.value.type == "authentication_error"


async def test_a_budget_refusal_reaches_the_server_once_and_says_when_it_resets(
    service: Service,
) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 200)
    engine = service.app[ENGINE]
    engine.reconfigure(config=EngineConfig(budgets=Budgets(agent_daily=Cap(sats=Msat(1_000)))))
    sdk = _sdk(service, account["api_key"])
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.chat.completions.create(model=CHEAP, messages=HELLO, max_tokens=20)
    await sdk.close()
    assert _served(service, 429) == 1  # the SDK's retries would have made it 3
    error = caught.value
    assert "daily cap of 1 sat would be exceeded" in str(error), str(error)
    assert error.code == "budget_exceeded"
    assert error.type == "insufficient_quota"
    headers = error.response.headers
    assert headers["x-should-retry"] == "false"
    # The cap resets at the start of the next (UTC) day; a client that waits may call again.
    tomorrow = (int(time.time()) // 86_400 + 1) * 86_400
    assert 0 < int(headers["Retry-After"]) <= tomorrow - int(time.time()) + 1
    assert service.emulator.state.counters["completions"] == 0


async def test_errors_off_the_openai_api_stay_plain_problems(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        missing = await http.get("/admin/status")  # no token
        v1_missing = await http.get("/v1/nothing-here")
    assert "error" not in missing.json()
    assert v1_missing.json()["error"] == {
        "message": v1_missing.json()["detail"],
        "type": "invalid_request_error",
        "code": "not_found",
        "param": None,
    }
