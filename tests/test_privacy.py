"""Privacy: sensitive content is found, recorded by kind, and kept off forbidden providers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stdnum import iban as stdnum_iban

from service.app import create_app as create_service
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.emulator.app import EmulatorConfig
from service.emulator.faults import Fault
from service.http.keys import ENGINE, STORE
from service.routing import privacy, privacy_evaluation, sensitive
from service.routing.breaker import Breakers
from service.routing.fallback import FallbackRunner
from service.routing.privacy import Decision, Detector, PrivacyMode, decide, request_texts
from service.tasks.engine import EngineConfig
from service.upstream.openrouter import OpenRouterClient

from .conftest import Service, service_settings, start_emulator, task_until

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


@pytest.mark.lnbits
async def test_sensitive_prompts_stay_local_and_cost_only_the_fee(service: Service) -> None:
    engine = service.app[ENGINE]
    async with httpx.AsyncClient(base_url=service.url) as http:
        refused = await http.post("/v1/tasks", json={"messages": PRIVATE})
        assert refused.status_code == 422  # no local endpoint configured yet
        assert refused.json()["kinds"] == ["email"]
        engine.reconfigure(local_runner=_local(service))
        task = (await http.post("/v1/tasks", json={"messages": PRIVATE})).json()
        assert task["model"] == "llama3.2:3b"
        assert task["price"]["total_msat"] == 1000  # the fee: local models cost nothing
        await service.pay(task["invoice"]["bolt11"])
        done = await task_until(http, task, "reconciled")
    assert done["charge_msat"] == 1000
    assert done["provisional"] is False
    async with service.app[STORE].read() as tx:
        stored = await tx.task(task["id"])
    assert stored is not None
    assert stored.data["privacy"] == {"kinds": ["email"], "decision": "local"}
    assert not _cloud_saw(service, "jo@example.com")


@pytest.mark.lnbits
async def test_a_local_outage_never_falls_back_to_the_cloud(service: Service) -> None:
    engine = service.app[ENGINE]
    engine.reconfigure(local_runner=_local(service))
    service.emulator.state.faults.set("llama3.2:3b", Fault(kind="bad_gateway"))
    async with httpx.AsyncClient(base_url=service.url) as http:
        task = (await http.post("/v1/tasks", json={"messages": PRIVATE})).json()
        await service.pay(task["invoice"]["bolt11"])
        done = await task_until(http, task, "refunded")
    assert "BadGateway" in done["error"]
    assert not _cloud_saw(service, "jo@example.com")


@pytest.mark.lnbits
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
        await task_until(http, task, "reconciled")
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
    monkeypatch.setattr("service.routing.sensitive.SEED_CHECKS", 0)
    assert Detector().kinds([wrong_checksum]) == {"seed_phrase"}
    assert Detector().kinds(["abandon " * 11]) == set()  # too short to be one at all


# -- what is and is not sensitive -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15 10:30",
        "2024-01-15T10:30:00.123Z INFO worker started in 812 ms",
        "[2024-01-15 10:30:00,123] ERROR connection reset",
        "ping 192.168.100.200 and 10.0.0.254",
        "ISBN 978-3-16-148410-0",
        "upgrade to version 10.4.1234.5678",
        "created_at 1705314600123 (milliseconds since the epoch)",
        "order number 4412345678 shipped",
        "invoice INV-2024-000123 is overdue",
        "sha1 3f786850e387550fdab836ed7e6dc881de23001b",
        "the total is 1234567.89 EUR",
        "coordinates 48.8566, 2.3522",
        "icon@2x.png",
        "pip install scikit-learn; see sk-learn-tutorial-part-2024",
        "password = os.environ['DB_PASSWORD']",
    ],
)
def test_look_alikes_are_not_sensitive(text: str) -> None:
    assert Detector().kinds([text]) == set()


@pytest.mark.parametrize(
    "text",
    [
        "call me on +44 20 7946 0958",
        "office: +1 (415) 555-2671",
        "mobile +49 151 23456789",
        "appelez le +33 6 12 34 56 78",
        "WhatsApp 0091 98765 43210",
        "call (415) 555-2671 after five",
        "phone: 020 7946 0958",
        "Telefon 030 12345678",
        "my number is 0612345678",
    ],
)
def test_phone_numbers_in_several_countries_formats(text: str) -> None:
    assert Detector().kinds([text]) == {"phone"}


def _card(rng: random.Random) -> str:
    """A Visa-shaped number with a valid Luhn digit."""
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = sum(
        d if i % 2 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits))
    )
    return "".join(map(str, digits)) + str(-total % 10)


def _steps(texts: list[str]) -> tuple[int, set[str]]:
    scan = Detector().scan(texts)
    return sum(1 for _ in scan.steps()), scan.found


def test_a_megabyte_of_distinct_card_numbers_is_scanned_in_linear_work() -> None:
    rng = random.Random(7)
    cards = [_card(rng) for _ in range(2**16)]  # 16 digits and a space each: 1 MiB
    big = " ".join(cards)
    assert len(big) >= 2**20 - 1
    steps, found = _steps([big])
    assert "payment_card" in found
    # Work is the same per window whatever the text holds: four times the text, four times the
    # steps (the old scan replaced every card found in the whole text: quadratic).
    quarter, _ = _steps([" ".join(cards[: 2**14])])
    assert steps <= 4 * quarter + 16
    # Card-like numbers that are no cards (wrong network digits) are each checked once.
    not_cards = " ".join("9" + c[1:] for c in cards)
    steps, found = _steps([not_cards])
    quarter, _ = _steps([" ".join("9" + c[1:] for c in cards[: 2**14])])
    assert found == set()
    assert steps <= 4 * quarter + 16


def test_phone_checks_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    invalid = " ".join(f"+999 {n:08d}" for n in range(1500))  # no such country code
    assert Detector().kinds([invalid]) == set()
    monkeypatch.setattr(sensitive, "PHONE_CHECKS", 100)
    assert Detector().kinds([invalid]) == {"phone"}  # past the cap: treated as one


async def test_the_scan_gives_the_event_loop_back_while_it_runs() -> None:
    rng = random.Random(8)
    body = {
        "messages": [
            {"role": "user", "content": " ".join("9" + _card(rng)[1:] for _ in range(2**16))}
        ]
    }
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    decision = await privacy.review(
        body, Detector(), mode=None, consent=False, local=False, slice_seconds=0
    )
    done.set()
    await running
    assert decision == Decision("send")
    windows = 2**20 // sensitive.WINDOW
    assert ticks > windows  # the loop ran between the scan's steps, many times


# -- every text that goes upstream ----------------------------------------------------------

TOOLING = {
    "model": "openai/gpt-4o-mini",
    "provider": {"order": ["openai"]},
    "messages": [
        {"role": "system", "content": "You are a billing assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Look up the customer."}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"email": "jo@example.com"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "name": "lookup",
            "content": '{"iban": "GB82 WEST 1234 5698 7654 32"}',
        },
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "charge",
                "description": "Charges with key sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "parameters": {"type": "object", "properties": {"amount": {"type": "integer"}}},
            },
        }
    ],
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": {"description": "call +44 20 7946 0958"}},
    },
}


def test_every_string_that_goes_upstream_is_collected() -> None:
    texts = list(request_texts(TOOLING))
    assert '{"email": "jo@example.com"}' in texts  # tool call arguments
    assert '{"iban": "GB82 WEST 1234 5698 7654 32"}' in texts  # a tool result
    assert "Charges with key sk_live_4eC39HqLyjWDarjtT1zdp7dc" in texts  # tools
    assert "call +44 20 7946 0958" in texts  # response_format
    assert "Look up the customer." in texts and "lookup" in texts  # parts, names
    assert "openai/gpt-4o-mini" not in texts and "openai" not in texts  # routing, not text
    assert Detector().kinds(texts) == {"email", "iban", "api_key", "phone"}


@pytest.mark.lnbits
@pytest.mark.parametrize(
    ("where", "kinds"),
    [
        ("tool_call", ["email"]),
        ("tool_result", ["iban"]),
        ("tools", ["api_key"]),
        ("response_format", ["phone"]),
    ],
)
async def test_sensitive_content_outside_the_message_text_is_found(
    service: Service, where: str, kinds: list[str]
) -> None:
    body: dict[str, Any] = {"model": "openai/gpt-4o-mini"}
    messages = TOOLING["messages"]
    assert isinstance(messages, list)
    if where == "tool_call":
        body["messages"] = messages[:3]
    elif where == "tool_result":
        body["messages"] = [messages[0], messages[3]]
    else:
        body["messages"] = messages[:2]
        body[where] = TOOLING[where]
    async with httpx.AsyncClient(base_url=service.url) as http:
        answer = await http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["kinds"] == kinds


# -- what a sensitive prompt does: the operator's mode ---------------------------------------


@pytest.mark.parametrize(
    ("mode", "consent", "local", "action"),
    [
        (None, False, True, "local"),
        (None, False, False, "refuse"),
        (None, True, False, "cloud_zdr"),
        (PrivacyMode.LOCAL, False, True, "local"),
        (PrivacyMode.LOCAL, True, True, "cloud_zdr"),
        (PrivacyMode.REFUSE, False, True, "refuse"),
        (PrivacyMode.REFUSE, True, True, "cloud_zdr"),
        (PrivacyMode.ZDR, False, False, "cloud_zdr"),
        (PrivacyMode.ZDR, False, True, "cloud_zdr"),
        (PrivacyMode.OFF, False, False, "send"),
    ],
)
def test_the_decision(mode: PrivacyMode | None, consent: bool, local: bool, action: str) -> None:
    decision = decide(
        ["phone", "email"], mode=mode, consent=consent, local=local, provider={"sort": "price"}
    )
    assert decision.action == action
    if action == "send":
        assert decision.record() is None
        return
    assert decision.kinds == ("email", "phone")
    if action == "cloud_zdr":
        assert decision.provider == {"sort": "price", "data_collection": "deny", "zdr": True}
    if action == "refuse":
        assert "email, phone" in decision.reason
        assert '"allow_sensitive_cloud": true' in decision.reason
        assert decision.record() is None
    assert decide([], mode=mode, consent=consent, local=local) == Decision("send")


@contextlib.asynccontextmanager
async def _service_with(
    lnbits: LnbitsServer, tmp_path: Path, **settings: Any
) -> AsyncIterator[Service]:
    emulator, emulator_runner = await start_emulator(EmulatorConfig(generation_delay=0.2))
    if settings.get("local_url") == "emulator":
        settings["local_url"] = emulator.url + "/local/v1"
    wallet = lnbits.create_wallet("satrouter")
    agent = lnbits.create_wallet("agent")
    lnbits.fund(agent, 1_000_000)
    app = create_service(
        service_settings(tmp_path, emulator, lnbits, wallet, **settings),
        engine_config=EngineConfig(generation_deadline=3, sweep_interval=0.1, invoice_expiry=60),
    )
    runner, url = await serve(app)
    try:
        yield Service(url, app, emulator, lnbits, agent)
    finally:
        await runner.cleanup()
        await emulator_runner.cleanup()


@pytest.mark.lnbits
async def test_mode_zdr_sends_sensitive_prompts_to_zero_retention_providers(
    lnbits: LnbitsServer, tmp_path: Path
) -> None:
    async with (
        _service_with(lnbits, tmp_path, privacy_mode="zdr") as service,
        httpx.AsyncClient(base_url=service.url) as http,
    ):
        account = await service.funded_account(http, 1_000)
        answer = await http.post(
            "/v1/chat/completions",
            json={
                "model": "openai/gpt-4o-mini",
                "messages": PRIVATE,
                "provider": {"order": ["openai"], "data_collection": "allow"},
            },
            headers=account["auth"],
        )
        assert answer.status_code == 200, answer.text
        sent = [r["body"] for r in service.emulator.state.requests if r["path"].startswith("/api/")]
        provider = dict(sent[-1]["provider"])
        assert provider.pop("max_price")  # the quote's own ceiling rides along
        assert provider == {"order": ["openai"], "data_collection": "deny", "zdr": True}


@pytest.mark.lnbits
async def test_mode_off_scans_nothing(lnbits: LnbitsServer, tmp_path: Path) -> None:
    async with (
        _service_with(lnbits, tmp_path, privacy_mode="off") as service,
        httpx.AsyncClient(base_url=service.url) as http,
    ):
        quote = await http.post(
            "/v1/quote", json={"messages": PRIVATE, "model": "openai/gpt-4o-mini"}
        )
        assert quote.status_code == 200, quote.text


@pytest.mark.lnbits
async def test_mode_refuse_refuses_even_with_a_local_endpoint(
    lnbits: LnbitsServer, tmp_path: Path
) -> None:
    async with (
        _service_with(lnbits, tmp_path, privacy_mode="refuse", local_url="emulator") as service,
        httpx.AsyncClient(base_url=service.url) as http,
    ):
        refused = await http.post("/v1/quote", json={"messages": PRIVATE})
        assert refused.status_code == 422
        assert refused.json()["kinds"] == ["email"]
        assert "allow_sensitive_cloud" in refused.json()["detail"]
        consented = await http.post(
            "/v1/quote", json={"messages": PRIVATE, "allow_sensitive_cloud": True}
        )
        assert consented.status_code == 200


@pytest.mark.lnbits
async def test_with_a_local_endpoint_the_default_is_local(
    lnbits: LnbitsServer, tmp_path: Path
) -> None:
    async with (
        _service_with(lnbits, tmp_path, local_url="emulator") as service,
        httpx.AsyncClient(base_url=service.url) as http,
    ):
        quote = await http.post("/v1/quote", json={"messages": PRIVATE})
        assert quote.status_code == 200
        assert quote.json()["model"] == "llama3.2:3b"
        assert quote.json()["total_msat"] == 1000


def test_the_labelled_corpus_meets_its_targets() -> None:
    """The figures ``make eval-privacy`` writes into docs/routing.md, held to their targets."""
    result = privacy_evaluation.evaluate()
    assert result.items >= 400
    assert set(privacy_evaluation.RECALL_TARGETS) <= set(result.labelled)
    assert result.benign >= 150
    assert result.shortfalls() == [], privacy_evaluation.report(result)
    for kind in privacy_evaluation.RECALL_TARGETS:
        assert result.precision(kind) >= 0.95, privacy_evaluation.report(result)


def test_corpus_numbers_are_valid() -> None:
    """Generated numbers pass the checks a real one would (the corpus is not graded on fakes)."""
    for item in privacy_evaluation.corpus():
        if item.kinds == {"payment_card"}:
            assert any(sensitive.is_card(m.group()) for m in sensitive._CARD.finditer(item.text))
        if item.kinds == {"iban"}:
            assert any(stdnum_iban.is_valid(m.group()) for m in sensitive._IBAN.finditer(item.text))


@pytest.mark.lnbits
async def test_a_megabyte_request_of_card_numbers_gets_its_answer(service: Service) -> None:
    """The 1 MiB body that held the event loop for 14 s: refused with its kind, like any other."""
    rng = random.Random(9)
    text = " ".join(_card(rng) for _ in range(57_000))  # under the 1 MiB body limit as JSON
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        answer = await http.post(
            "/v1/quote", json={"messages": [{"role": "user", "content": text}]}
        )
        assert answer.status_code == 422, answer.text[:200]
        assert answer.json()["kinds"] == ["payment_card"]
        assert (await http.get("/healthz")).status_code == 200
