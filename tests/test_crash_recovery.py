"""Kill the server (SIGKILL) at each stage of a task's life, restart it, and show that every
paid task ends reconciled or refunded exactly once, and that the books balance."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing import ledger
from billing.money import Msat
from billing.store import open_store
from service.demo.lnbits import LnbitsServer, Wallet
from service.emulator.faults import Fault
from service.http.keys import ENGINE, STORE

from .conftest import Emulator, Service, ServiceProcess

pytestmark = pytest.mark.lnbits
CHEAP = "meta-llama/llama-3.1-8b-instruct"
SLOW = "openai/gpt-4o"
HELLO = [{"role": "user", "content": "Hello there, agent! [[tokens=10]]"}]


async def _state(http: httpx.AsyncClient, task: dict[str, Any]) -> str:
    response = await http.get(
        f"/v1/tasks/{task['id']}", headers={"Authorization": f"Bearer {task['task_token']}"}
    )
    return str(response.json()["status"])


async def _wait_state(
    http: httpx.AsyncClient, task: dict[str, Any], *states: str, timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = await _state(http, task)
            if state in states:
                return state
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task['id']} never reached {states}")


async def test_sigkill_at_every_stage(
    service_process: tuple[ServiceProcess, Emulator, LnbitsServer, Wallet, Path],
) -> None:
    server, emulator, lnbits, agent, db = service_process
    emulator.state.faults.set(SLOW, Fault(kind="slow", delay=3))
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

        async def create(model: str) -> dict[str, Any]:
            response = await http.post("/v1/tasks", json={"messages": HELLO, "model": model})
            assert response.status_code == 201, response.text
            return dict(response.json())

        def pay(task: dict[str, Any]) -> None:
            response = lnbits.pay(agent, task["invoice"]["bolt11"])
            assert response.status_code < 300, response.text

        missed, interrupted, reconciling, just_paid = (
            await create(CHEAP),
            await create(SLOW),
            await create(CHEAP),
            await create(CHEAP),
        )

        # 1. Killed while a call is running: the task is refunded, never run twice.
        await asyncio.to_thread(pay, interrupted)
        await _wait_state(http, interrupted, "running")
        await server.kill()
        # 2. Paid while the server is down: the push is lost; start-up re-checks open invoices.
        await asyncio.to_thread(pay, missed)
        emulator.state.config.generation_delay = 2.0
        await server.start()
        assert await _wait_state(http, interrupted, "refunded") == "refunded"
        # 3. Killed while waiting for /generation: reconciled once after the restart.
        await _wait_state(http, missed, "completed")
        await server.kill()
        await server.start()
        assert await _wait_state(http, missed, "reconciled") == "reconciled"
        # 4. Killed right after a payment, wherever the push was in its handling.
        await asyncio.to_thread(pay, reconciling)
        await server.kill()
        await server.start()
        await _wait_state(http, reconciling, "completed", "reconciled")
        await server.kill()
        emulator.state.config.generation_delay = 0.1
        await server.start()
        assert await _wait_state(http, reconciling, "reconciled") == "reconciled"
        # 5. A payment the moment before a kill, then many restarts in a row.
        await asyncio.to_thread(pay, just_paid)
        for _ in range(3):
            await server.kill()
            await server.start()
        assert await _wait_state(http, just_paid, "reconciled", "refunded") in (
            "reconciled",
            "refunded",
        )
    await server.kill()

    store = await open_store(f"sqlite:///{db}")
    try:
        async with store.read() as tx:
            check = await ledger.check(tx)
            assert check.ok, check.problems
            for task in (missed, interrupted, reconciling, just_paid):
                entries = [j.kind for j in await tx.journal_by_ref(task["id"])]
                endings = [k for k in entries if k in ("settle", "refund")]
                assert entries.count("escrow_paid") == 1, (task["id"], entries)
                assert len(endings) == 1, (task["id"], entries)
    finally:
        await store.close()
    # The interrupted call reached the emulator at most once; none ran twice.
    assert emulator.state.counters["completions"] <= 4


async def test_a_call_that_ends_after_its_task_was_refunded_stays_refunded(
    service: Service,
) -> None:
    """A start-up recovery on the same SQLite database refunds a call still in flight here
    (one process per SQLite database: it takes every lease as a dead process's; on PostgreSQL
    the same happens when this replica's lease ran out): the call's answer does not bring the
    task back,
    the agent keeps its refund, and what OpenRouter billed is booked as the operator's cost."""
    engine, store = service.app[ENGINE], service.app[STORE]
    await service.emulator.control("POST", "/config", {"ttft": 1.0})
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        account = await service.funded_account(http, 1000)
        call = asyncio.create_task(
            http.post(
                "/v1/chat/completions",
                json={"model": CHEAP, "max_tokens": 50, "messages": HELLO},
                headers=account["auth"],
            )
        )
        await asyncio.sleep(0.5)  # the call is upstream
        assert await engine.recover() == 0  # its lease is live: nobody takes it over
        assert await engine.recover(starting=True) == 1
        answer = await call
        assert answer.status_code == 200, answer.text
        task_id = answer.headers["X-Satrouter-Task"]
        for _ in range(100):
            async with store.read() as tx:
                booked = await tx.journal_by_key(f"unbilled:{task_id}")
            if booked is not None:
                break
            await asyncio.sleep(0.05)
    async with store.read() as tx:
        task = await tx.task(task_id)
        balance = await ledger.agent_balance(tx, account["id"])
        check = await ledger.check(tx)
    assert task is not None and task.state == "refunded"
    assert balance == Msat(1_000_000)  # refunded once, charged never
    assert booked is not None  # the call's cost, against the credits
    assert check.ok
    async with httpx.AsyncClient(base_url=service.url) as http:
        admin = {"Authorization": "Bearer admin-secret-for-tests"}
        status = (await http.get("/admin/status", headers=admin)).json()
    assert status["world"]["holdings"]["openrouter"]["matches"] is True


async def test_a_running_task_whose_lease_expired_is_taken_over_without_a_restart(
    service: Service,
) -> None:
    """The periodic recovery: a call whose lease ran out (its replica died) is failed and
    refunded by a live process, once; the live process's own leases are left alone."""
    engine, store = service.app[ENGINE], service.app[STORE]
    await service.emulator.control("POST", "/config", {"ttft": 1.0})
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        account = await service.funded_account(http, 1000)
        call = asyncio.create_task(
            http.post(
                "/v1/chat/completions",
                json={"model": CHEAP, "max_tokens": 50, "messages": HELLO},
                headers=account["auth"],
            )
        )
        await asyncio.sleep(0.5)  # the call is upstream, under this process's lease
        assert await engine.recover() == 0
        async with store.transaction() as tx:
            (running,) = await tx.tasks_in_states(["running"])
            await tx.take_lease(running.id, "a-replica-that-died", time.time() - 1)
        await engine.recover()
        async with store.read() as tx:
            taken = await tx.task(running.id)
        assert taken is not None and taken.state == "refunded"
        assert await engine.recover() == 0  # once
        answer = await call
        assert answer.status_code == 200, answer.text
    async with store.read() as tx:
        entries = [j.kind for j in await tx.journal_by_ref(running.id)]
        balance = await ledger.agent_balance(tx, account["id"])
        check = await ledger.check(tx)
    assert entries.count("refund") == 1 and "settle" not in entries, entries
    assert balance == Msat(1_000_000)
    assert check.ok
