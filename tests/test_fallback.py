"""Graceful degradation: circuit breakers and the fallback chain, against the emulator."""

from __future__ import annotations

import json

import httpx
import pytest

from service.emulator.faults import Fault
from service.http.keys import STORE
from service.routing.breaker import Breakers, BreakerState
from service.routing.fallback import AllModelsFailed, FallbackRunner
from service.upstream.openrouter import OpenRouterClient

from .conftest import HELLO, METRICS_AUTH, Emulator, Service, task_until

PRIMARY = "meta-llama/llama-3.1-8b-instruct"
SECOND = "openai/gpt-4o-mini"
THIRD = "google/gemini-2.0-flash-001"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_cools_down_and_probes() -> None:
    clock = Clock()
    breakers = Breakers(threshold=3, cooldown=5, clock=clock)
    for _ in range(2):
        breakers.failed("m")
    assert breakers.state("m") is BreakerState.CLOSED
    breakers.failed("m")
    assert breakers.state("m") is BreakerState.OPEN
    assert not breakers.allow("m")
    clock.now += 5
    assert breakers.state("m") is BreakerState.HALF_OPEN
    assert breakers.allow("m")  # one probe...
    assert not breakers.allow("m")  # ...at a time
    breakers.failed("m")  # the probe failed: open again, for twice as long
    clock.now += 5
    assert breakers.state("m") is BreakerState.OPEN
    clock.now += 5
    assert breakers.allow("m")
    breakers.succeeded("m")
    assert breakers.state("m") is BreakerState.CLOSED


def test_retry_after_opens_at_once_for_as_long_as_asked() -> None:
    clock = Clock()
    breakers = Breakers(cooldown=1, clock=clock)
    breakers.failed("m", retry_after=30)
    clock.now += 29
    assert not breakers.allow("m")
    clock.now += 1
    assert breakers.allow("m")


async def _no_sleep(seconds: float) -> None:
    return None


async def test_primary_down_and_second_flaky_every_request_completes(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    emulator.state.faults.set(PRIMARY, Fault(kind="bad_gateway"))
    emulator.state.faults.set(SECOND, Fault(kind="unavailable", rate=0.5))
    runner = FallbackRunner(client, Breakers(), sleep=_no_sleep)
    served = []
    for _ in range(40):
        result, attempts = await runner.chat(
            {"model": PRIMARY, "models": [PRIMARY, SECOND], "messages": HELLO}
        )
        served.append(result.completion.model)
        assert attempts[-1].outcome == "ok"
    assert set(served) == {SECOND}
    # The primary's breaker opened: later hops no longer offered it.
    assert runner.breakers.state(PRIMARY) is BreakerState.OPEN
    sent = [r["body"] for r in (await emulator.control("GET", "/requests"))["requests"]]
    assert any(b.get("models") == [PRIMARY, SECOND] for b in sent)
    assert sent[-1]["model"] == SECOND and "models" not in sent[-1]


async def test_errors_no_model_can_fix_end_at_once(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    await emulator.control("POST", "/config", {"credits": "0"})
    runner = FallbackRunner(client, Breakers(), sleep=_no_sleep)
    with pytest.raises(AllModelsFailed) as caught:
        await runner.chat({"model": PRIMARY, "models": [PRIMARY, SECOND], "messages": HELLO})
    assert len(caught.value.attempts) == 1
    assert runner.breakers.state(PRIMARY) is BreakerState.CLOSED  # not the model's fault


async def test_a_stream_that_fails_before_its_first_token_falls_back(
    client: OpenRouterClient, emulator: Emulator
) -> None:
    emulator.state.faults.set(PRIMARY, Fault(kind="error_chunk", after_tokens=0))
    runner = FallbackRunner(client, Breakers(), sleep=_no_sleep)
    body = {"model": PRIMARY, "models": [PRIMARY, SECOND], "messages": HELLO}
    stream, chunks, first, attempts = await runner.stream(body)
    rest = [chunk.text async for chunk in chunks]
    stream.aclose()
    assert stream.model == SECOND
    assert attempts[0].outcome == "error"
    assert attempts[0].error_type == "provider_overloaded"
    assert attempts[-1].served == SECOND
    assert (first.text + "".join(rest)).startswith("Here is the emulated answer")
    assert runner.breakers.state(SECOND) is BreakerState.CLOSED


@pytest.mark.lnbits
async def test_paid_calls_fall_back_record_attempts_and_pay_for_what_ran(
    service: Service,
) -> None:
    service.emulator.state.faults.set(PRIMARY, Fault(kind="bad_gateway"))
    service.emulator.state.faults.set(SECOND, Fault(kind="unavailable", rate=0.5))
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        done = []
        for _ in range(6):
            task = (
                await http.post("/v1/tasks", json={"messages": HELLO, "models": [PRIMARY, SECOND]})
            ).json()
            await service.pay(task["invoice"]["bolt11"])
            done.append(await task_until(http, task, "reconciled"))
        metrics = (await http.get("/metrics", headers=METRICS_AUTH)).text
    assert all(d["model"] == SECOND for d in done)
    async with service.app[STORE].read() as tx:
        stored = await tx.task(done[0]["id"])
    assert stored is not None
    assert stored.data["attempts"][-1]["served"] == SECOND
    # Charged for the model that ran: 19 x $0.00000015 + 10 x $0.0000006 = $0.00000885.
    assert stored.data["cost_nusd"] == 8_850
    assert f'satrouter_circuit_breaker_open{{model="{PRIMARY}"}} 1.0' in metrics
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_a_stream_failing_after_tokens_is_reported_honestly(service: Service) -> None:
    service.emulator.state.faults.set(PRIMARY, Fault(kind="error_chunk", after_tokens=3))
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        auth = (await service.funded_account(http, 100))["auth"]
        streamed = await http.post(
            "/v1/chat/completions",
            headers=auth,
            json={"model": PRIMARY, "messages": HELLO, "stream": True},
        )
    lines = [
        json.loads(line[6:])
        for line in streamed.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    assert [
        bool(line.get("choices", [{}])[0].get("delta", {}).get("content")) for line in lines[:3]
    ] == [True, True, True]
    assert lines[-1]["choices"][0]["finish_reason"] == "error"
    assert "error" in lines[-1]


@pytest.mark.lnbits
async def test_with_a_last_resort_a_tier_ends_on_the_local_model(service: Service) -> None:
    from importlib import resources

    from service.emulator.app import load_catalog
    from service.http.keys import ENGINE
    from service.routing.policy import PolicyHolder, parse
    from service.upstream.catalog import Catalog

    known = Catalog.from_response(load_catalog()).__contains__
    text = resources.files("service.routing").joinpath("default_policy.toml").read_text()
    policy = parse(text.replace('# last_resort = "local"', 'last_resort = "local"'), known)
    engine = service.app[ENGINE]
    engine.reconfigure(routing=PolicyHolder(policy, None, known))
    engine.reconfigure(
        local_runner=FallbackRunner(
            OpenRouterClient(base_url=service.emulator.url + "/local/v1"), Breakers()
        )
    )
    for model in policy.chain("economy"):  # every cloud model of the tier's chain is down
        service.emulator.state.faults.set(model, Fault(kind="bad_gateway"))
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        routed = (await http.post("/v1/tasks", json={"messages": HELLO, "tier": "economy"})).json()
        pinned = (await http.post("/v1/tasks", json={"messages": HELLO, "model": PRIMARY})).json()
        for task in (routed, pinned):
            await service.pay(task["invoice"]["bolt11"])
        local = await task_until(http, routed, "reconciled")
        refunded = await task_until(http, pinned, "refunded")
    assert local["model"] == "llama3.2:3b"
    assert local["charge_msat"] == 1000  # the fee alone: the local model costs nothing upstream
    assert local["provisional"] is False
    async with service.app[STORE].read() as tx:
        stored = await tx.task(local["id"])
    assert stored is not None
    assert stored.data["ran_locally"] is True
    served = [a["served"] for a in stored.data["attempts"]]
    assert served[-1] == "llama3.2:3b" and served[:-1] == [None] * (len(served) - 1)
    assert "BadGateway" in refunded["error"]  # a pinned model is never swapped for a local one
    assert (await service.check_ledger()).ok
