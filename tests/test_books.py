"""The books against the world: the Lightning asset against the real LNbits wallet, the
OpenRouter credits asset against the emulator's ``/credits``. They match after real work, and a
difference beyond what is in flight and the tolerance fails ``/admin/status``, fires an alert
and shows on the metrics."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest

from billing import alerts, ledger
from billing.holdings import Holding
from billing.money import Msat
from service.alerts import AlertWorker
from service.emulator.app import DEFAULT_API_KEY
from service.http.keys import BOOKS, ENGINE, STORE

from .conftest import METRICS_AUTH, Service

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"
ADMIN = {"Authorization": "Bearer admin-secret-for-tests"}


async def _status(http: httpx.AsyncClient) -> dict[str, object]:
    response = await http.get("/admin/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _work(http: httpx.AsyncClient, service: Service) -> None:
    """A prepaid account's deposit and a paid call, reconciled."""
    account = await service.funded_account(http, 20)
    answer = await http.post(
        "/v1/chat/completions",
        json={"model": CHEAP, "messages": [{"role": "user", "content": "hi [[tokens=5]]"}]},
        headers=account["auth"],
    )
    assert answer.status_code == 200, answer.text
    task_id = answer.headers["X-Satrouter-Task"]
    for _ in range(200):
        async with service.app[STORE].read() as tx:
            task = await tx.task(task_id)
        if task is not None and task.state == "reconciled":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the call was not reconciled")


def _holdings(status: dict[str, object]) -> dict[str, dict[str, object]]:
    world = status["world"]
    assert isinstance(world, dict)
    return dict(world["holdings"])


async def test_the_books_match_the_wallet_and_the_credits_after_real_work(
    service: Service,
) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        await _work(http, service)
        status = await _status(http)
    held = _holdings(status)
    assert status["ok"] is True
    assert held["lightning"]["matches"] is True
    # Nothing is in flight: the books equal the wallet to the msat.
    assert held["lightning"]["difference"] == 0
    assert held["lightning"]["world"] == 20_000 > 0
    assert held["openrouter"]["matches"] is True
    # The credits the emulator started with were booked once, as the owner's money.
    async with service.app[STORE].read() as tx:
        opening = await tx.journal_by_key("funded:opening")
        assert opening is not None
        assert await ledger.balance(tx, ledger.OPENROUTER_CREDITS) == held["openrouter"]["books"]
    entries = await service.journal_size()
    async with httpx.AsyncClient(base_url=service.url) as http:
        await _status(http)  # a second look books nothing again
    assert await service.journal_size() == entries
    assert (await service.check_ledger()).ok


async def test_sats_that_reach_the_wallet_outside_the_books_are_a_mismatch(
    service: Service,
) -> None:
    engine = service.app[ENGINE]
    async with httpx.AsyncClient(base_url=service.url) as http:
        await _work(http, service)
        assert (await _status(http))["ok"] is True
        # An invoice of satrouter's wallet that satrouter never recorded, paid by someone.
        stray = await engine.lightning.create_invoice(Msat(50_000), "not booked", 600)
        await service.pay(stray.bolt11)
        status = await _status(http)
        held = _holdings(status)
        assert status["ok"] is False
        assert held["lightning"]["matches"] is False
        assert held["lightning"]["difference"] == 50_000
        metrics = (await http.get("/metrics", headers=METRICS_AUTH)).text
    assert 'satrouter_books_match{holding="lightning"} 0.0' in metrics
    assert 'satrouter_books_difference{holding="lightning"} 50000.0' in metrics
    # The alert worker fires once for it.
    async with aiohttp.ClientSession() as session:
        worker = AlertWorker(
            service.app[STORE],
            session,
            alerts.Thresholds(),
            balance=None,
            books=service.app[BOOKS],
            webhook_url=None,
            secret=None,
        )
        fired = await worker.check()
        again = await worker.check()
    assert [r.key for r in fired] == ["books:lightning"]
    assert "50000" in fired[0].message
    assert again == []


async def test_credits_spent_outside_satrouter_are_a_mismatch(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        await _work(http, service)
        assert (await _status(http))["ok"] is True
        # Someone else spends the same OpenRouter credits: the world falls below the books.
        for _ in range(3):
            spent = await http.post(
                service.emulator.base_url + "/chat/completions",
                json={
                    "model": "anthropic/claude-opus-4",
                    "messages": [{"role": "user", "content": "x [[tokens=3000]]"}],
                    "max_tokens": 3000,
                },
                headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
            )
            assert spent.status_code == 200, spent.text
        status = await _status(http)
    held = _holdings(status)["openrouter"]
    assert status["ok"] is False
    assert held["matches"] is False
    difference = held["difference"]
    assert isinstance(difference, int) and difference < -10_000_000  # over $0.01 missing


def test_what_is_in_flight_explains_a_difference_and_no_more() -> None:
    leaving = Holding("lightning", "msat", 100_000, 60_000, 1_000, leaving=40_000)
    assert leaving.matches is True
    assert Holding("lightning", "msat", 100_000, 58_999, 1_000, leaving=40_000).matches is False
    arriving = Holding("openrouter", "nusd", 10, 510, 0, arriving=500)
    assert arriving.matches is True
    assert Holding("openrouter", "nusd", 10, 511, 0, arriving=500).matches is False
    assert Holding("lightning", "msat", 5, None, 0, error="down").matches is None
