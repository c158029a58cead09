"""The paid L402 retry: it keeps every routing decision of its quote, and runs once however
many times it is sent at once."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from billing.money import Msat
from billing.pricing import PricingPolicy
from service.http.keys import ENGINE
from service.routing.breaker import Breakers
from service.routing.fallback import FallbackRunner
from service.upstream.openrouter import OpenRouterClient

from .conftest import Service

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"
JSON = {"Content-Type": "application/json"}


async def _paid_credential(
    http: httpx.AsyncClient, service: Service, body: bytes
) -> dict[str, str]:
    challenge = await http.post("/v1/chat/completions", content=body, headers=JSON)
    assert challenge.status_code == 402, challenge.text
    problem = challenge.json()
    paid = await service.pay(problem["invoice"])
    return {**JSON, "Authorization": f"L402 {problem['macaroon']}:{paid['preimage']}"}


async def test_a_capped_retry_keeps_a_sensitive_prompt_local(service: Service) -> None:
    engine = service.app[ENGINE]
    local = OpenRouterClient(base_url=service.emulator.url + "/local/v1")
    engine.local_runner = FallbackRunner(local, Breakers())
    secret = "Summarise: write to jo@example.com about the invoice. [[tokens=5]]"
    body = json.dumps({"model": CHEAP, "messages": [{"role": "user", "content": secret}]})
    async with httpx.AsyncClient(base_url=service.url) as http:
        credential = await _paid_credential(http, service, body.encode())
        # The price moves up between the challenge and the paid retry: the retry is capped at
        # what was paid, and must still be routed as it was priced.
        engine.policy = PricingPolicy(engine.policy.markup_bps, engine.policy.fee + Msat(5000))
        answer = await http.post("/v1/chat/completions", content=body, headers=credential)
        assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "llama3.2:3b"
    cloud = [r for r in service.emulator.state.requests if r["path"].startswith("/api/")]
    assert not any("jo@example.com" in json.dumps(r["body"]) for r in cloud)
    await local.aclose()
    assert (await service.check_ledger()).ok


async def test_concurrent_paid_retries_run_once(service: Service) -> None:
    body = json.dumps(
        {"model": CHEAP, "messages": [{"role": "user", "content": "hi [[tokens=5]]"}]}
    ).encode()
    async with httpx.AsyncClient(base_url=service.url) as http:
        credential = await _paid_credential(http, service, body)
        sent = await asyncio.gather(
            *(http.post("/v1/chat/completions", content=body, headers=credential) for _ in range(6))
        )
        statuses = [r.status_code for r in sent]
        assert set(statuses) <= {200, 409}, [r.text for r in sent]
        assert statuses.count(200) >= 1
        again = await http.post("/v1/chat/completions", content=body, headers=credential)
        assert again.status_code == 200
        assert again.headers["X-Satrouter-Replay"] == "true"
    assert service.emulator.state.counters["completions"] == 1
    assert (await service.check_ledger()).ok
