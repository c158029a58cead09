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
from billing.store import open_store
from service.demo.lnbits import LnbitsServer, Wallet
from service.emulator.faults import Fault

from .conftest import Emulator, ServiceProcess

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
