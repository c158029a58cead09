"""Runway and spend alerts: readings from the books, fired once per crossing, signed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from billing import alerts, ledger
from billing.money import Msat, NanoUsd
from billing.runway import runway
from billing.store import Store, TaskRow, open_store
from service.alerts import AlertWorker
from service.demo.loopback import serve
from service.tasks.callbacks import verify

NOW = 1_795_200_000.0  # 2026-11-21 12:00 UTC


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path}/alerts.db")
    yield s
    await s.close()


async def _spend(
    store: Store, key: str, nusd: int, agent: str, charge: int, inline_usd: str
) -> None:
    async with store.transaction() as tx:
        await ledger.post(tx, ledger.invoice_paid_into_escrow(key, Msat(charge), key), now=NOW - 60)
        await ledger.post(
            tx, ledger.settle(key, agent, Msat(charge), Msat(charge), NanoUsd(nusd)), now=NOW - 60
        )
        await tx.insert_task(
            TaskRow(
                key,
                "reconciled",
                agent,
                {
                    "payer": agent,
                    "charge_msat": charge,
                    "cost_nusd": nusd,
                    "inline_cost_usd": inline_usd,
                    "quote": {"model": "m", "btc_usd": "100000"},
                    "model_used": "m",
                    "reconciled_at": NOW - 60,
                },
                NOW - 60,
                NOW - 60,
            )
        )


async def test_runway_from_the_last_day_of_spend(store: Store) -> None:
    await _spend(store, "t1", 2_400_000_000, "a", 5_000_000, "2.4")  # $2.40 spent today
    left = await runway(store, NanoUsd(10_000_000_000), now=NOW)  # $10 left
    assert left.spend_per_hour == NanoUsd(100_000_000)  # $0.10 an hour
    assert left.hours == Decimal("100.0")
    idle = await runway(store, NanoUsd(10_000_000_000), now=NOW + 2 * 86_400)
    assert idle.hours is None


async def test_readings_and_once_per_crossing(store: Store) -> None:
    limits = alerts.Thresholds(
        daily_spend=NanoUsd(1_000_000_000),
        agent_daily_spend=Msat(4_000_000),
        min_margin_pct=Decimal("60"),
        min_runway_hours=Decimal("200"),
        max_discrepancy_pct=Decimal("10"),
    )
    await _spend(store, "t1", 2_400_000_000, "a", 5_000_000, "2.0")  # 20 % off inline
    await _spend(store, "t2", 100_000_000, "b", 1_000_000, "0.1")
    left = await runway(store, NanoUsd(10_000_000_000), now=NOW)
    current = {r.key: r for r in await alerts.readings(store, limits, left, now=NOW)}
    assert current["daily_spend"].crossed  # $2.50 > $1
    assert current["agent_spend:a"].crossed and not current["agent_spend:b"].crossed
    # Revenue 6,000 sat, cost $2.50 = 2,500 sat at $100k: margin 58.33 %, under 60 %.
    assert current["margin"].crossed
    assert "58.33%" in current["margin"].message
    assert current["runway"].crossed  # 96 h < 200 h
    assert current["discrepancy"].crossed
    assert "t1" in current["discrepancy"].message
    async with store.transaction() as tx:
        first = await alerts.new_crossings(tx, list(current.values()))
    async with store.transaction() as tx:
        again = await alerts.new_crossings(tx, list(current.values()))
    assert {r.key for r in first} == {
        "daily_spend",
        "agent_spend:a",
        "margin",
        "runway",
        "discrepancy",
    }
    assert again == []  # still crossed: nothing new
    back = [alerts.Reading("daily_spend", False, "")]
    async with store.transaction() as tx:
        assert await alerts.new_crossings(tx, back) == []
    async with store.transaction() as tx:
        assert [r.key for r in await alerts.new_crossings(tx, [current["daily_spend"]])] == [
            "daily_spend"
        ]  # crossed again after coming back


async def test_worker_logs_and_sends_signed_webhooks_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Satrouter-Signature"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alerts", hook)
    runner, url = await serve(app)
    await _spend(store, "t1", 2_400_000_000, "a", 5_000_000, "2.4")
    limits = alerts.Thresholds(daily_spend=NanoUsd(1_000_000_000))
    try:
        async with aiohttp.ClientSession() as session:
            worker = AlertWorker(
                store, session, limits, balance=None, webhook_url=url + "/alerts", secret="s3cret"
            )
            assert [r.key for r in await worker.check(now=NOW)] == ["daily_spend"]
            assert await worker.check(now=NOW) == []
    finally:
        await runner.cleanup()
    assert len(received) == 1
    body, signature = received[0]
    assert json.loads(body)["alert"] == "daily_spend"
    assert verify("s3cret", body, signature)
    assert "ALERT daily_spend" in caplog.text
