"""Privacy: sensitive content is found, recorded by kind, and kept off forbidden providers."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from service.emulator.faults import Fault
from service.http.keys import ENGINE, STORE
from service.routing.breaker import Breakers
from service.routing.fallback import FallbackRunner
from service.routing.privacy import Detector
from service.upstream.openrouter import OpenRouterClient

from .conftest import Service
from .test_pipeline import _task_until

SEED = "abandon " * 11 + "about"  # a valid BIP-39 mnemonic (checksum holds)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("write to jo.smith@example.com", {"email"}),
        ("call me on +44 20 7946 0958", {"phone"}),
        ("my card is 4111-1111-1111-1111", {"payment_card"}),
        ("pay to DE89 3704 0044 0532 0130 00", {"iban"}),
        ("SSN 123-45-6789", {"national_id"}),
        ("use AKIAIOSFODNN7EXAMPLE for S3", {"api_key"}),
        ("token ghp_" + "a" * 36, {"api_key"}),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...", {"private_key"}),
        (f"my wallet words: {SEED}", {"seed_phrase"}),
        ("badge EMP-123456", {"employee_id"}),
        ("order number 4111 1111 1111 1112", set()),  # fails Luhn: not a card
        ("pay to DE89 3704 0044 0532 0130 01", set()),  # fails mod 97: not an IBAN
        ("abandon " * 12, set()),  # BIP-39 words, wrong checksum
        ("what is the capital of France?", set()),
        ("the meeting is at 10:30 in room 4", set()),
    ],
)
def test_detection(text: str, kinds: set[str]) -> None:
    detector = Detector({"employee_id": re.compile(r"EMP-[0-9]{6}")})
    assert detector.kinds([text]) == kinds


PRIVATE = [{"role": "user", "content": "Summarise: contact jo@example.com. [[tokens=5]]"}]


def _local(service: Service) -> FallbackRunner:
    client = OpenRouterClient(base_url=service.emulator.url + "/local/v1")
    return FallbackRunner(client, Breakers())


def _cloud_saw(service: Service, needle: str) -> bool:
    return any(
        needle in json.dumps(r["body"]) and r["path"].startswith("/api/")
        for r in service.emulator.state.requests
    )


async def test_sensitive_prompts_stay_local_and_cost_only_the_fee(service: Service) -> None:
    engine = service.app[ENGINE]
    async with httpx.AsyncClient(base_url=service.url) as http:
        refused = await http.post("/v1/tasks", json={"messages": PRIVATE})
        assert refused.status_code == 422  # no local endpoint configured yet
        assert refused.json()["kinds"] == ["email"]
        engine.local_runner = _local(service)
        task = (await http.post("/v1/tasks", json={"messages": PRIVATE})).json()
        assert task["model"] == "llama3.2:3b"
        assert task["price"]["total_msat"] == 1000  # the fee: local models cost nothing
        await service.pay(task["invoice"]["bolt11"])
        done = await _task_until(http, task, "reconciled")
    assert done["charge_msat"] == 1000
    assert done["provisional"] is False
    async with service.app[STORE].read() as tx:
        stored = await tx.task(task["id"])
    assert stored is not None
    assert stored.data["privacy"] == {"kinds": ["email"], "decision": "local"}
    assert not _cloud_saw(service, "jo@example.com")


async def test_a_local_outage_never_falls_back_to_the_cloud(service: Service) -> None:
    engine = service.app[ENGINE]
    engine.local_runner = _local(service)
    service.emulator.state.faults.set("llama3.2:3b", Fault(kind="bad_gateway"))
    async with httpx.AsyncClient(base_url=service.url) as http:
        task = (await http.post("/v1/tasks", json={"messages": PRIVATE})).json()
        await service.pay(task["invoice"]["bolt11"])
        done = await _task_until(http, task, "refunded")
    assert "BadGateway" in done["error"]
    assert not _cloud_saw(service, "jo@example.com")


async def test_with_consent_the_cloud_runs_with_zero_data_retention(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        task = (
            await http.post(
                "/v1/tasks",
                json={
                    "messages": PRIVATE,
                    "model": "openai/gpt-4o-mini",
                    "allow_sensitive_cloud": True,
                },
            )
        ).json()
        await service.pay(task["invoice"]["bolt11"])
        await _task_until(http, task, "reconciled")
    sent = [r["body"] for r in service.emulator.state.requests if r["path"].startswith("/api/")]
    provider = sent[-1]["provider"]
    assert (provider["data_collection"], provider["zdr"]) == ("deny", True)
    assert set(provider) == {"data_collection", "zdr", "max_price"}  # max_price: the quote's
    async with service.app[STORE].read() as tx:
        stored = await tx.task(task["id"])
    assert stored is not None
    assert stored.data["privacy"]["decision"] == "cloud_zdr"


def test_a_run_too_long_to_check_counts_as_a_seed_phrase(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong_checksum = "abandon " * 12
    assert Detector().kinds([wrong_checksum]) == set()
    monkeypatch.setattr("service.routing.privacy.SEED_CHECKS", 0)
    assert Detector().kinds([wrong_checksum]) == {"seed_phrase"}
    assert Detector().kinds(["abandon " * 11]) == set()  # too short to be one at all
