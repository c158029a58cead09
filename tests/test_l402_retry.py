"""The paid L402 retry: it keeps every routing decision of its quote, and runs once however
many times it is sent at once."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import httpx
import pytest

from billing.budget import Budgets, Cap
from billing.money import Msat, NanoUsd
from billing.pricing import PricingPolicy
from service.http.keys import ENGINE, STORE
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


async def test_a_retry_whose_price_rose_is_challenged_again_and_stays_local(
    service: Service,
) -> None:
    engine = service.app[ENGINE]
    local = OpenRouterClient(base_url=service.emulator.url + "/local/v1")
    engine.reconfigure(local_runner=FallbackRunner(local, Breakers()))
    secret = "Summarise: write to jo@example.com about the invoice. [[tokens=5]]"
    body = json.dumps({"model": CHEAP, "messages": [{"role": "user", "content": secret}]})
    async with httpx.AsyncClient(base_url=service.url) as http:
        credential = await _paid_credential(http, service, body.encode())
        # The price moves up between the challenge and the paid retry: the retry is not run
        # on less than it costs; it is challenged again at today's price.
        engine.reconfigure(
            policy=PricingPolicy(engine.policy.markup_bps, engine.policy.fee + Msat(5000))
        )
        moved = await http.post("/v1/chat/completions", content=body, headers=credential)
        assert moved.status_code == 402, moved.text
        assert moved.json()["type"].endswith("price_changed")
        assert [h.split(" ")[0] for h in moved.headers.get_list("WWW-Authenticate")] == [
            "LSAT",
            "L402",
            "Payment",
        ]
        assert moved.json()["price"]["total_msat"] == 6000  # the fee alone: it stays local
        # The first payment is credit on its token.
        me = await http.get(
            "/v1/accounts/me", headers={"Authorization": credential["Authorization"]}
        )
        assert me.json()["balance_msat"] == 1000
        paid = await service.pay(moved.json()["invoice"])
        again = {**JSON, "Authorization": f"L402 {moved.json()['macaroon']}:{paid['preimage']}"}
        answer = await http.post("/v1/chat/completions", content=body, headers=again)
        assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "llama3.2:3b"
    cloud = [r for r in service.emulator.state.requests if r["path"].startswith("/api/")]
    assert not any("jo@example.com" in json.dumps(r["body"]) for r in cloud)
    await local.aclose()
    assert (await service.check_ledger()).ok


async def test_a_token_bought_while_the_budget_stepped_down_does_not_run_premium_cheaply(
    service: Service,
) -> None:
    """A challenge priced while the day's budget had stepped premium down to a cheaper tier,
    retried after the budget reset, would run premium on the cheaper payment."""
    engine = service.app[ENGINE]
    engine.reconfigure(
        config=replace(engine.config, budgets=Budgets(global_daily=Cap(usd=NanoUsd(10**12))))
    )
    body = json.dumps(
        {
            "model": "tier:premium",
            "max_tokens": 400,
            "messages": [{"role": "user", "content": "Summarise the report. [[tokens=50]]"}],
        }
    ).encode()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        async with service.app[STORE].transaction() as tx:  # late in the day: 95 % spent
            day = engine.config.budgets.periods(time.time())[0]
            await tx.add_budget_usage("global", day, 0, 95 * 10**10)
        credential = await _paid_credential(http, service, body)
        async with service.app[STORE].transaction() as tx:  # the next day: nothing spent
            await tx.add_budget_usage("global", day, 0, -95 * 10**10)
        retried = await http.post("/v1/chat/completions", content=body, headers=credential)
    assert retried.status_code == 402, retried.text
    assert retried.json()["type"].endswith("price_changed")
    assert not [r for r in service.emulator.state.requests if r["path"].startswith("/api/")]


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
