"""Budgets: caps that concurrent requests can never together exceed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing import budget, ledger
from billing.budget import BudgetExceeded, Budgets, Cap
from billing.lightning import LightningError
from billing.money import Msat, NanoUsd
from billing.store import Store, open_store
from service.app import create_app
from service.config import Settings
from service.demo.loopback import serve
from service.emulator.app import DEFAULT_API_KEY, EmulatorConfig
from service.http.keys import ENGINE, STORE
from service.tasks.engine import EngineConfig

from .conftest import CHEAP, HELLO, Service, start_emulator, task_until

NOON = 1_795_298_400.0  # 2026-11-21 22:00 UTC (07:00 on the 22nd in Tokyo)


class NoLightning:
    """Prepaid calls need no invoices: a backend that only ever waits."""

    name = "none"

    async def hints(self) -> AsyncIterator[None]:
        while True:
            await asyncio.sleep(3600)
            yield None

    async def wallet_balance(self) -> Msat:
        raise LightningError("this stand-in holds no wallet")

    async def close(self) -> None:
        return None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path}/budgets.db")
    yield s
    await s.close()


def test_periods_follow_the_reset_hour_and_time_zone() -> None:
    utc = Budgets()
    assert utc.periods(NOON) == ("day:2026-11-21", "month:2026-11")
    tokyo = Budgets(time_zone="Asia/Tokyo", reset_hour=9)  # 07:00 on the 22nd in Tokyo
    assert tokyo.periods(NOON) == ("day:2026-11-21", "month:2026-11")
    assert tokyo.periods(NOON + 3 * 3600) == ("day:2026-11-22", "month:2026-11")


def test_a_period_ends_at_the_next_reset_in_its_time_zone() -> None:
    utc = Budgets()
    assert utc.seconds_left("day:2026-11-21", NOON) == 2 * 3600  # 22:00 -> midnight
    assert utc.seconds_left("month:2026-11", NOON) == (9 * 24 + 2) * 3600
    assert utc.seconds_left("month:2026-12", NOON) == (40 * 24 + 2) * 3600  # into next year
    tokyo = Budgets(time_zone="Asia/Tokyo", reset_hour=9)  # 07:00 on the 22nd in Tokyo
    assert tokyo.seconds_left(tokyo.periods(NOON)[0], NOON) == 2 * 3600
    # Across a daylight-saving change a day is 23 hours long, and the answer says so.
    paris = Budgets(time_zone="Europe/Paris")
    before_spring = 1_774_738_800.0  # 2026-03-29 00:00 in Paris; clocks skip 02:00 -> 03:00
    assert paris.seconds_left(paris.periods(before_spring)[0], before_spring) == 23 * 3600


async def test_commit_is_all_or_nothing_and_corrects(store: Store) -> None:
    caps = Budgets(global_daily=Cap(usd=NanoUsd(10_000)), agent_daily=Cap(sats=Msat(5_000)))
    async with store.transaction() as tx:
        await budget.commit(tx, caps, "a", Msat(4_000), NanoUsd(6_000), NOON)
    with pytest.raises(BudgetExceeded, match="agent:a daily cap of 5 sat"):
        async with store.transaction() as tx:
            await budget.commit(tx, caps, "a", Msat(2_000), NanoUsd(1_000), NOON)
    with pytest.raises(BudgetExceeded, match=r"global daily cap of \$0.00001"):
        async with store.transaction() as tx:
            await budget.commit(tx, caps, "b", Msat(1_000), NanoUsd(5_000), NOON)
    async with store.read() as tx:  # the refused commits counted nothing anywhere
        assert await tx.budget_usage("global", "day:2026-11-21") == (4_000, 6_000)
        assert await tx.budget_usage("agent:b", "day:2026-11-21") == (0, 0)
    async with store.transaction() as tx:  # settled for less than the maximum
        await budget.correct(tx, caps, "a", Msat(-3_000), NanoUsd(-5_000), NOON)
        await budget.commit(tx, caps, "b", Msat(1_000), NanoUsd(5_000), NOON)
        shown = await budget.state(tx, caps, "a", NOON)
    assert {(s["scope"], s["spent_sat"]) for s in shown} == {("global", 2.0), ("agent", 1.0)}


async def test_hundreds_of_concurrent_calls_never_exceed_a_small_cap(tmp_path: Path) -> None:
    emulator, emulator_runner = await start_emulator(EmulatorConfig(generation_delay=0.0))
    cap = NanoUsd(100_000)  # $0.0001: room for about 60 calls at their maximum
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/cap.db",
        openrouter_base_url=emulator.base_url,
        openrouter_api_key=DEFAULT_API_KEY,
        lnbits_url="http://127.0.0.1:9",
        lnbits_invoice_key="unused",
        btc_usd="100000",
        catalog_cache=tmp_path / "models.json",
        metrics_port=0,
    )
    app = create_app(
        settings,
        lightning=NoLightning(),  # type: ignore[arg-type]
        engine_config=EngineConfig(budgets=Budgets(global_daily=Cap(usd=cap))),
    )
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient(
            base_url=url, timeout=60, limits=httpx.Limits(max_connections=400)
        ) as http:
            account = (await http.post("/v1/accounts")).json()
            async with app[STORE].transaction() as tx:
                await ledger.post(tx, ledger.deposit(account["id"], Msat(10**9), "funding"))
            auth = {"Authorization": f"Bearer {account['api_key']}"}

            async def call() -> int:
                response = await http.post(
                    "/v1/chat/completions",
                    headers=auth,
                    json={"model": CHEAP, "messages": HELLO, "max_tokens": 10},
                )
                return response.status_code

            statuses = await asyncio.gather(*(call() for _ in range(300)))
            for _ in range(100):  # let every call reconcile
                async with app[STORE].read() as tx:
                    if not await tx.tasks_in_states(["running", "completed"]):
                        break
                await asyncio.sleep(0.1)
            me = (await http.get("/v1/accounts/me", headers=auth)).json()
        async with app[STORE].read() as tx:
            done = await tx.tasks_in_states(["reconciled"])
            period = app[ENGINE].config.budgets.periods(time.time())[0]
            counted = await tx.budget_usage("global", period)
            check = await ledger.check(tx)
    finally:
        await runner.cleanup()
        await emulator_runner.cleanup()
    assert statuses.count(200) == len(done)
    assert statuses.count(429) > 0  # the cap bit
    assert set(statuses) <= {200, 429}
    spent = sum(t.data["cost_nusd"] for t in done)
    assert spent <= cap.value  # what really ran stayed under the cap
    assert counted[1] == spent  # and the books of the budget agree with it
    assert me["budgets"][0]["cap_usd"] == "0.0001"
    assert check.ok


@pytest.mark.lnbits
async def test_callers_max_price_and_an_invoice_paid_over_the_cap(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        too_dear = await http.post(
            "/v1/tasks", json={"messages": HELLO, "model": CHEAP, "max_price_msat": 1}
        )
        assert too_dear.status_code == 402
        assert too_dear.json()["type"].endswith("over_max_price")
        task = (await http.post("/v1/tasks", json={"messages": HELLO, "model": CHEAP})).json()
        engine = service.app[ENGINE]  # the cap arrives after the task was quoted...
        engine.reconfigure(config=EngineConfig(budgets=Budgets(global_daily=Cap(sats=Msat(1)))))
        await service.pay(task["invoice"]["bolt11"])  # ...so the paid task must not run
        done: Any = await task_until(http, task, "refunded")
        assert "budget" in done["error"]
        auth = {"Authorization": f"Bearer {task['task_token']}"}
        me = (await http.get("/v1/accounts/me", headers=auth)).json()
        assert me["balance_msat"] == task["invoice"]["amount_msat"]
        capped = await http.post("/v1/tasks", json={"messages": HELLO, "model": CHEAP})
        assert capped.status_code == 429
        assert capped.json()["type"].endswith("budget_exceeded")
        status = (
            await http.get(
                "/admin/status", headers={"Authorization": "Bearer admin-secret-for-tests"}
            )
        ).json()
    assert status["budgets"][0]["cap_sat"] == 0
    assert service.emulator.state.counters["completions"] == 0
    assert (await service.check_ledger()).ok
