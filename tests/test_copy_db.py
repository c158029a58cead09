"""``satrouter copy-db``: a SQLite database that took real payments moves to PostgreSQL, and the
service goes on there with the same keys, balances, task tokens and books. Refused while a
satrouter holds the SQLite file, into a target that holds data, and rolled back whole when a
check fails on the target."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import httpx
import pytest

from billing import ledger
from billing.money import Msat
from billing.store import open_store
from billing.store.postgres import PostgresStore
from service.app import create_app
from service.demo.lnbits import LnbitsServer
from service.demo.loopback import serve
from service.emulator.app import EmulatorConfig
from service.http.keys import STORE
from service.tasks.engine import EngineConfig

from .conftest import (
    CHEAP,
    HELLO,
    Service,
    satrouter_command,
    service_settings,
    start_emulator,
    task_until,
    until,
)

pytestmark = pytest.mark.postgresql

ENGINE = EngineConfig(generation_deadline=3, sweep_interval=0.1, invoice_expiry=60)


async def _copy_db(source: str, target: str) -> tuple[int, str]:
    """The real command, in its own process."""
    return await satrouter_command("copy-db", source, target)


async def _settled(service: Service, http: httpx.AsyncClient, auth: dict[str, str]) -> int:
    """The account's balance once no task of it is still running or awaiting reconciliation."""

    async def done() -> int | None:
        async with service.app[STORE].read() as tx:
            if await tx.tasks_in_states(["paid", "running", "completed"]):
                return None
        return int((await http.get("/v1/accounts/me", headers=auth)).json()["balance_msat"])

    return int(await until(done))


async def _pg_rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name != 'schema_version'"
        )
        counts = [f'SELECT COUNT(*) FROM "{t[0]}"' for t in tables]  # noqa: S608
        return sum([int(await conn.fetchval(sql)) for sql in counts])
    finally:
        await conn.close()


@pytest.mark.lnbits
async def test_paid_work_on_sqlite_goes_on_on_postgresql(
    lnbits: LnbitsServer, tmp_path: Path, postgres_url: str
) -> None:
    emulator, emulator_runner = await start_emulator(EmulatorConfig(generation_delay=0.2))
    wallet = lnbits.create_wallet("satrouter-copy")
    agent = lnbits.create_wallet("agent-copy")
    lnbits.fund(agent, 1_000_000)
    on_sqlite = service_settings(tmp_path, emulator, lnbits, wallet)
    try:
        # Paid work on SQLite: a deposit and calls, a paid task, an L402 payment, a withdrawal.
        app = create_app(on_sqlite, engine_config=ENGINE)
        runner, url = await serve(app)
        service = Service(url, app, emulator, lnbits, agent)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                account = await service.funded_account(http, 5_000)
                auth = account["auth"]
                for _ in range(2):
                    chat = await http.post(
                        "/v1/chat/completions",
                        json={"model": CHEAP, "messages": HELLO, "max_tokens": 20},
                        headers=auth,
                    )
                    assert chat.status_code == 200, chat.text
                created = await http.post(
                    "/v1/tasks", json={"messages": HELLO, "model": CHEAP, "max_tokens": 50}
                )
                assert created.status_code == 201, created.text
                task = created.json()
                await service.pay(task["invoice"]["bolt11"])
                reconciled = await task_until(http, task, "reconciled")

                body = {"model": CHEAP, "messages": HELLO, "max_tokens": 20}
                challenge = await http.post("/v1/chat/completions", json=body)
                assert challenge.status_code == 402, challenge.text
                paid = await service.pay(challenge.json()["invoice"])
                l402 = {"Authorization": f"L402 {challenge.json()['macaroon']}:{paid['preimage']}"}
                answered = await http.post("/v1/chat/completions", json=body, headers=l402)
                assert answered.status_code == 200, answered.text

                bolt11 = await service.agent_invoice(1_000)
                withdrawal = await http.post(
                    "/v1/accounts/withdrawals", headers=auth, json={"invoice": bolt11}
                )
                assert withdrawal.status_code == 200, withdrawal.text
                assert withdrawal.json()["status"] == "succeeded"
                balance = await _settled(service, http, auth)
            assert 0 < balance < 4_000_000
            assert (await service.check_ledger()).ok

            # Refused while the service holds the database; nothing is written to the target.
            code, out = await _copy_db(on_sqlite.database_url, postgres_url)
            assert code == 1, out
            assert "open in a running satrouter" in out and "stop the service first" in out
            assert await _pg_rows(postgres_url) == 0
        finally:
            await runner.cleanup()

        code, out = await _copy_db(on_sqlite.database_url, postgres_url)
        assert code == 0, out
        assert "ledger check ok" in out and "audit chain intact" in out, out

        # Into a target that now holds data: refused, and the target keeps what it had.
        rows = await _pg_rows(postgres_url)
        code, out = await _copy_db(on_sqlite.database_url, postgres_url)
        assert code == 1, out
        assert "already holds data" in out
        assert await _pg_rows(postgres_url) == rows

        # The service on PostgreSQL: same key, same balance, the task token still reads its
        # task, the books balance, and a new call is paid and reconciled.
        on_pg = on_sqlite.model_copy(update={"database_url": postgres_url})
        app = create_app(on_pg, engine_config=ENGINE)
        runner, url = await serve(app)
        service = Service(url, app, emulator, lnbits, agent)
        try:
            assert isinstance(app[STORE], PostgresStore)
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                me = await http.get("/v1/accounts/me", headers=auth)
                assert me.status_code == 200, me.text
                assert me.json()["balance_msat"] == balance
                read = await http.get(
                    f"/v1/tasks/{task['id']}",
                    headers={"Authorization": f"Bearer {task['task_token']}"},
                )
                assert read.status_code == 200, read.text
                assert read.json()["status"] == "reconciled"
                assert read.json()["charge_msat"] == reconciled["charge_msat"]
                assert (await service.check_ledger()).ok

                chat = await http.post(
                    "/v1/chat/completions",
                    json={"model": CHEAP, "messages": HELLO, "max_tokens": 20},
                    headers=auth,
                )
                assert chat.status_code == 200, chat.text
                after = await _settled(service, http, auth)
                assert 0 < after < balance
            async with app[STORE].read() as tx:
                reconciled_tasks = await tx.tasks_in_states(["reconciled"])
            assert len(reconciled_tasks) == 5  # 3 chats, the task, the L402 call
            assert (await service.check_ledger()).ok
        finally:
            await runner.cleanup()
    finally:
        await emulator_runner.cleanup()


async def _source_with_money(path: Path) -> None:
    """A SQLite database with a deposit posted (journal, postings, audit entries)."""
    store = await open_store(f"sqlite:///{path}")
    try:
        async with store.transaction() as tx:
            await ledger.post(tx, ledger.deposit("agent-1", Msat(21_000), "ab" * 32))
    finally:
        await store.close()


async def test_a_target_with_data_is_refused_and_kept(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "satrouter.db"
    await _source_with_money(source)
    store = await open_store(postgres_url)
    try:
        async with store.transaction() as tx:
            await tx.set_value("task-token-secret", "the target's own")  # a service ran there
    finally:
        await store.close()
    code, out = await _copy_db(f"sqlite:///{source}", postgres_url)
    assert code == 1, out
    assert "already holds data (in kv)" in out
    assert await _pg_rows(postgres_url) == 1


async def test_a_failed_check_rolls_the_whole_copy_back(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "satrouter.db"
    await _source_with_money(source)
    with sqlite3.connect(source) as conn:  # an edited audit entry: its hash no longer matches
        conn.execute("UPDATE audit SET data = replace(data, '21000', '99000') WHERE seq = 1")
    code, out = await _copy_db(f"sqlite:///{source}", postgres_url)
    assert code == 1, out
    assert "audit chain breaks at entry 1" in out
    assert await _pg_rows(postgres_url) == 0
    with sqlite3.connect(source) as conn:  # repaired: the same target takes the copy
        conn.execute("UPDATE audit SET data = replace(data, '99000', '21000') WHERE seq = 1")
    code, out = await _copy_db(f"sqlite:///{source}", postgres_url)
    assert code == 0, out
    store = await open_store(postgres_url)
    try:
        async with store.read() as tx:
            assert (await tx.account("liabilities:agent:agent-1")) is not None
            assert (await ledger.check(tx)).ok
        # Identity sequences are past the copied ids: a new entry gets the next id.
        async with store.transaction() as tx:
            await ledger.post(tx, ledger.deposit("agent-1", Msat(1_000), "cd" * 32))
        async with store.read() as tx:
            entry = await tx.journal_by_key("deposit:" + "cd" * 32)
        assert entry is not None and entry.id == 2
    finally:
        await store.close()
