"""The whole service on PostgreSQL: real LNbits (FakeWallet), the OpenRouter emulator, real HTTP
over loopback, and the store a fresh database in the throwaway cluster (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from billing.store.postgres import PostgresStore
from service.app import create_app
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.emulator.app import EmulatorConfig
from service.http.keys import STORE
from service.tasks.engine import EngineConfig

from .conftest import CHEAP, HELLO, Service, service_settings, start_emulator, task_until, until

pytestmark = [pytest.mark.lnbits, pytest.mark.postgresql]


@pytest.fixture
async def pg_service(
    lnbits: LnbitsServer, tmp_path: Path, postgres_url: str
) -> AsyncIterator[Service]:
    emulator, emulator_runner = await start_emulator(EmulatorConfig(generation_delay=0.2))
    wallet = lnbits.create_wallet("satrouter-pg")
    agent = lnbits.create_wallet("agent-pg")
    lnbits.fund(agent, 1_000_000)
    settings = service_settings(tmp_path, emulator, lnbits, wallet, database_url=postgres_url)
    app = create_app(
        settings,
        engine_config=EngineConfig(generation_deadline=3, sweep_interval=0.1, invoice_expiry=60),
    )
    runner, url = await serve(app)
    try:
        yield Service(url, app, emulator, lnbits, agent)
    finally:
        await runner.cleanup()
        await emulator_runner.cleanup()


async def test_prepaid_chat_and_a_paid_task_reconcile_on_postgresql(pg_service: Service) -> None:
    service = pg_service
    assert isinstance(service.app[STORE], PostgresStore)
    async with httpx.AsyncClient(base_url=service.url) as http:
        # A prepaid account: a deposit paid over Lightning, then an OpenAI-style chat on credit.
        account = await service.funded_account(http, 500)
        auth = account["auth"]
        chat = await http.post(
            "/v1/chat/completions",
            json={"model": CHEAP, "messages": HELLO, "max_tokens": 20},
            headers=auth,
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]

        async def chat_settled() -> int | None:
            async with service.app[STORE].read() as tx:
                if await tx.tasks_in_states(["paid", "running", "completed"]):
                    return None
            return int((await http.get("/v1/accounts/me", headers=auth)).json()["balance_msat"])

        balance = await until(chat_settled)
        assert 0 < balance < 500_000

        # A task paid by its own invoice, run, reconciled from /generation, change returned.
        created = await http.post(
            "/v1/tasks", json={"messages": HELLO, "model": CHEAP, "max_tokens": 50}
        )
        assert created.status_code == 201, created.text
        task = created.json()
        await service.pay(task["invoice"]["bolt11"])
        done = await task_until(http, task, "reconciled")
        assert done["result"]["choices"][0]["message"]["content"]
        assert done["charge_msat"] + done["change_msat"] == task["invoice"]["amount_msat"]
        assert done["provisional"] is False
        async with service.app[STORE].read() as tx:
            states = {t.id: t.state for t in await tx.tasks_in_states(["reconciled"])}
        assert states[task["id"]] == "reconciled"
        assert len(states) == 2  # the chat completion's task too
    check = await service.check_ledger()
    assert check.ok, check
