"""Two replicas (``satrouter serve`` processes) on one PostgreSQL database: one task per
Idempotency-Key whichever replica hears it, no overdraft and no budget overrun under load split
across both, and a replica killed mid-call whose work the other takes over once its leases run
out, while a live replica's call is never taken from it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from benchmarks._report import free_port
from billing import ledger
from billing.budget import Budgets
from billing.money import Msat
from billing.store import Store, open_store
from service.demo.lnbits import LnbitsServer
from service.emulator.app import DEFAULT_API_KEY, EmulatorConfig

from .conftest import CHEAP, HELLO, Emulator, ServiceProcess, start_emulator, until
from .test_callbacks import Receiver

pytestmark = [pytest.mark.lnbits, pytest.mark.postgresql]

LEASE = "2"  # seconds: short, so that a dead replica's work is taken over soon
StartReplica = Callable[..., Awaitable[ServiceProcess]]


@pytest.fixture
async def cluster(
    lnbits: LnbitsServer, postgres_url: str, tmp_path: Any
) -> AsyncIterator[tuple[StartReplica, Emulator, Store]]:
    """Start replicas on one database (``start(name, **env)``); the store, to look inside."""
    emulator, runner = await start_emulator(EmulatorConfig(generation_delay=0.1))
    wallet = lnbits.create_wallet("satrouter-replicas")
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SATROUTER_", "OPENROUTER_", "LNBITS_", "LND_"))
    }
    base.update(
        {
            "SATROUTER_DATABASE_URL": postgres_url,
            "SATROUTER_BTC_USD": "100000",
            "SATROUTER_CATALOG_CACHE": str(tmp_path / "models.json"),
            "SATROUTER_METRICS_PORT": "0",
            "SATROUTER_LEASE_SECONDS": LEASE,
            "OPENROUTER_BASE_URL": emulator.base_url,
            "OPENROUTER_API_KEY": DEFAULT_API_KEY,
            "LNBITS_URL": lnbits.url,
            "LNBITS_INVOICE_KEY": wallet.inkey,
            "LNBITS_ADMIN_KEY": wallet.adminkey,
        }
    )
    started: list[ServiceProcess] = []

    async def start(name: str, **env: str) -> ServiceProcess:
        port = free_port()
        replica = ServiceProcess(
            {**base, "SATROUTER_PORT": str(port), "SATROUTER_REPLICA_ID": name, **env}, port
        )
        await replica.start()
        started.append(replica)
        return replica

    store = await open_store(postgres_url)
    try:
        yield start, emulator, store
    finally:
        for replica in started:
            if replica.proc is not None and replica.proc.returncode is None:
                await replica.kill()
        await store.close()
        await runner.cleanup()


async def _account(
    http: httpx.AsyncClient, replica: ServiceProcess, store: Store, msat: int
) -> dict[str, Any]:
    account = dict((await http.post(replica.url + "/v1/accounts")).json())
    async with store.transaction() as tx:
        await ledger.post(tx, ledger.deposit(account["id"], Msat(msat), f"funding-{account['id']}"))
    return {**account, "auth": {"Authorization": f"Bearer {account['api_key']}"}}


async def _endings(store: Store, task_ids: list[str]) -> dict[str, list[str]]:
    async with store.read() as tx:
        return {
            task_id: [
                j.kind
                for j in await tx.journal_by_ref(task_id)
                if j.kind in ("reserve", "escrow_paid", "settle", "refund")
            ]
            for task_id in task_ids
        }


async def test_one_idempotency_key_sent_to_both_replicas_at_once_makes_one_task(
    cluster: tuple[StartReplica, Emulator, Store],
) -> None:
    start, _, store = cluster
    one, two = await start("one"), await start("two")
    async with httpx.AsyncClient(timeout=30) as http:
        account = await _account(http, one, store, 10_000_000)
        headers = account["auth"]
        body = {"messages": HELLO, "model": CHEAP, "max_tokens": 20}
        for _ in range(5):  # five races, each on a key of its own
            headers = {**headers, "Idempotency-Key": f"order-{time.time_ns()}"}
            answers = await asyncio.gather(
                http.post(one.url + "/v1/tasks", json=body, headers=headers),
                http.post(two.url + "/v1/tasks", json=body, headers=headers),
            )
            assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
            assert answers[0].json()["id"] == answers[1].json()["id"]
    async with store.read() as tx:
        tasks = await tx.tasks_updated_between(
            None, None, ["paid", "running", "completed", "reconciled", "refunded"]
        )
        check = await ledger.check(tx)
    assert len(tasks) == 5
    assert check.ok, check.problems


async def test_calls_split_across_replicas_on_one_balance_and_one_cap(
    cluster: tuple[StartReplica, Emulator, Store],
) -> None:
    """400 prepaid calls, each sent to one replica or the other: first 100 on a balance that
    covers about ten at their maximum price (the balance bites), then 300 on a large balance
    (the global daily cap bites). No overdraft, spend within the cap, the books balanced."""
    start, _, store = cluster
    cap = Decimal("0.0001")
    # A long lease: with 400 calls in flight on a loaded machine a replica's heartbeat can lag
    # past a short one, and a live call taken over is refunded after it answered (by design,
    # tested below); here every call must be the replica's own to the end.
    env = {"SATROUTER_BUDGET_DAILY_USD": str(cap), "SATROUTER_LEASE_SECONDS": "60"}
    replicas = [await start("one", **env), await start("two", **env)]
    limits = httpx.Limits(max_connections=400)
    chat = {"model": CHEAP, "messages": HELLO, "max_tokens": 10}
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        rich = await _account(http, replicas[0], store, 100_000_000)
        first = await http.post(
            replicas[1].url + "/v1/chat/completions", headers=rich["auth"], json=chat
        )
        assert first.status_code == 200, first.text
        async with store.read() as tx:
            priced = await tx.task(first.headers["X-Satrouter-Task"])
        assert priced is not None
        held = int(priced.data["held_msat"])  # what one call reserves at most
        poor = await _account(http, replicas[0], store, held * 10 + held // 2)

        async def call(n: int, account: dict[str, Any]) -> int:
            response = await http.post(
                replicas[n % 2].url + "/v1/chat/completions", headers=account["auth"], json=chat
            )
            return response.status_code

        few = await asyncio.gather(*(call(n, poor) for n in range(100)))
        many = await asyncio.gather(*(call(n, rich) for n in range(299)))

        async def settled() -> bool:
            async with store.read() as tx:
                return not await tx.tasks_in_states(["paid", "running", "completed"])

        await until(settled, timeout=60)
    async with store.read() as tx:
        done = await tx.tasks_in_states(["reconciled"])
        period = Budgets().periods(time.time())[0]
        counted = await tx.budget_usage("global", period)
        poor_left = await ledger.agent_balance(tx, poor["id"])
        rich_left = await ledger.agent_balance(tx, rich["id"])
        check = await ledger.check(tx)
    assert set(few) | set(many) <= {200, 402, 429}, (set(few), set(many))
    assert few.count(200) > 0 and few.count(402) > 0  # the balance refused the rest
    assert many.count(429) > 0  # the cap refused the rest
    assert 1 + few.count(200) + many.count(200) == len(done)
    assert poor_left.value >= 0 and rich_left.value >= 0  # no overdraft
    spent = sum(t.data["cost_nusd"] for t in done)
    assert spent <= int(cap * 10**9)  # what really ran stayed under the cap
    assert counted[1] == spent
    assert check.ok, check.problems


async def test_a_killed_replicas_calls_are_taken_over_a_live_ones_never(
    cluster: tuple[StartReplica, Emulator, Store],
) -> None:
    start, emulator, store = cluster
    emulator.state.config.ttft = 5.0  # longer than a lease: only renewals keep a call its own
    one = await start("one")
    async with httpx.AsyncClient(timeout=60) as http:
        account = await _account(http, one, store, 50_000_000)
        chat = {"model": CHEAP, "messages": HELLO, "max_tokens": 10}

        async def running() -> list[str] | None:
            async with store.read() as tx:
                found = [t.id for t in await tx.tasks_in_states(["running"])]
            return found or None

        # 1. A live replica's call: another replica starting meanwhile leaves it alone.
        live = asyncio.create_task(
            http.post(one.url + "/v1/chat/completions", json=chat, headers=account["auth"])
        )
        await until(running)
        two = await start("two")
        answer = await live
        assert answer.status_code == 200, answer.text
        live_id = answer.headers["X-Satrouter-Task"]

        # 2. Calls and tasks in flight on a replica killed with SIGKILL.
        calls = [
            asyncio.create_task(
                http.post(one.url + "/v1/chat/completions", json=chat, headers=account["auth"])
            )
            for _ in range(4)
        ]
        created = [
            (
                await http.post(
                    one.url + "/v1/tasks",
                    json={"messages": HELLO, "model": CHEAP, "max_tokens": 10},
                    headers=account["auth"],
                )
            ).json()["id"]
            for _ in range(2)
        ]

        async def all_running() -> list[str] | None:
            found = await running() or []
            return found if len(found) >= 5 else None

        await until(all_running)
        await one.kill()
        for call in calls:
            with pytest.raises(httpx.HTTPError):
                await call
        async with store.read() as tx:  # the killed replica's own calls (tasks may run on two)
            orphaned = [
                t.id for t in await tx.tasks_in_states(["running"]) if t.data["kind"] == "prepaid"
            ]
        assert len(orphaned) == len(calls)

        async def taken_over() -> bool:
            async with store.read() as tx:
                return not await tx.tasks_in_states(["paid", "running", "completed"])

        await until(taken_over, timeout=60)
        assert (await http.get(two.url + "/healthz")).status_code == 200
    async with store.read() as tx:
        states = {t: (await tx.task(t)) for t in [live_id, *orphaned, *created]}
        check = await ledger.check(tx)
    assert states[live_id] is not None and states[live_id].state == "reconciled"
    for task_id in orphaned:
        task = states[task_id]
        assert task is not None and task.state == "refunded", task
    endings = await _endings(store, [live_id, *orphaned, *created])
    for task_id, kinds in endings.items():
        assert kinds.count("reserve") == 1, (task_id, kinds)
        assert kinds.count("settle") + kinds.count("refund") == 1, (task_id, kinds)
    # the killed calls reached OpenRouter once at most: none ran a second time
    assert emulator.state.counters["completions"] <= 1 + len(set([*orphaned, *created]))
    assert check.ok, check.problems


async def test_each_callback_is_sent_once_by_two_replicas(
    cluster: tuple[StartReplica, Emulator, Store],
) -> None:
    start, _, store = cluster
    env = {"SATROUTER_CALLBACK_ALLOW_PRIVATE": "true"}
    one, two = await start("one", **env), await start("two", **env)
    async with Receiver() as hook, httpx.AsyncClient(timeout=30) as http:
        account = await _account(http, one, store, 10_000_000)
        ids = []
        for n in range(4):
            created = await http.post(
                (one, two)[n % 2].url + "/v1/tasks",
                json={
                    "messages": HELLO,
                    "model": CHEAP,
                    "max_tokens": 10,
                    "callback_url": hook.url,
                },
                headers=account["auth"],
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])

        async def all_told() -> bool:  # paid, running, completed, reconciled: four each
            return len(hook.got) >= 4 * len(ids)

        await until(all_told, timeout=30)
        await asyncio.sleep(2)  # a second sender, if there were one, has had its turn
    message_ids = [headers["webhook-id"] for _, _, headers in hook.got]
    assert len(message_ids) == len(set(message_ids)) == 4 * len(ids)


async def test_a_replica_killed_at_each_stage_of_a_paid_task_the_other_finishes_it_once(
    cluster: tuple[StartReplica, Emulator, Store], lnbits: LnbitsServer
) -> None:
    """Tasks paid by their own invoices, created on a replica that is killed with SIGKILL when
    one is waiting for /generation and when one has just been paid: the other replica finishes
    each exactly once (one escrow entry, one settle or refund), and the books balance."""
    start, emulator, store = cluster
    agent = lnbits.create_wallet("agent-replicas")
    lnbits.fund(agent, 1_000_000)
    emulator.state.config.generation_delay = 3.0  # the cost is known only after a while
    one, two = await start("one"), await start("two")
    body = {"messages": HELLO, "model": CHEAP, "max_tokens": 10}

    async def state(task_id: str) -> str:
        async with store.read() as tx:
            task = await tx.task(task_id)
        assert task is not None
        return task.state

    async def pay(task: dict[str, Any]) -> None:
        paid = await asyncio.to_thread(lnbits.pay, agent, task["invoice"]["bolt11"])
        assert paid.status_code < 300, paid.text

    async with httpx.AsyncClient(timeout=30) as http:
        # 1. Killed while the task waits for its cost from /generation.
        waiting = (await http.post(one.url + "/v1/tasks", json=body)).json()
        await pay(waiting)
        await until(lambda: _is(state(waiting["id"]), "completed", "reconciled"))
        await one.kill()
        await until(lambda: _is(state(waiting["id"]), "reconciled"), timeout=30)
        # 2. Killed the moment after a payment, wherever its push was in its handling.
        await one.start()
        just_paid = (await http.post(one.url + "/v1/tasks", json=body)).json()
        await pay(just_paid)
        await one.kill()
        await until(lambda: _is(state(just_paid["id"]), "reconciled", "refunded"), timeout=30)
        assert (await http.get(two.url + "/healthz")).status_code == 200
    async with store.read() as tx:
        check = await ledger.check(tx)
    for task_id in (waiting["id"], just_paid["id"]):
        async with store.read() as tx:
            kinds = [j.kind for j in await tx.journal_by_ref(task_id)]
        assert kinds.count("escrow_paid") == 1, (task_id, kinds)
        assert kinds.count("settle") + kinds.count("refund") == 1, (task_id, kinds)
    assert check.ok, check.problems


async def _is(state: Awaitable[str], *wanted: str) -> bool:
    return await state in wanted
