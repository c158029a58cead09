"""ClaimsTx: queued tasks leased to one claimant, never to two, free again once expired."""

from __future__ import annotations

import asyncio

from billing.store import Store, TaskRow, open_store


async def _tasks(store: Store, *rows: tuple[str, str]) -> None:
    async with store.transaction() as tx:
        for n, (task_id, state) in enumerate(rows):
            await tx.insert_task(TaskRow(task_id, state, "a", {"n": n}, 1.0 + n, 1.0 + n))


async def _claim(store: Store, owner: str, now: float, limit: int = 10) -> list[str]:
    async with store.transaction() as tx:
        return [t.id for t in await tx.claim_tasks(["completed"], owner, now + 10, now, limit)]


async def test_claims_take_unheld_tasks_in_the_states_oldest_first(store: Store) -> None:
    await _tasks(store, ("t1", "completed"), ("t2", "paid"), ("t3", "completed"))
    async with store.transaction() as tx:
        claimed = await tx.claim_tasks(["completed"], "r1", 20.0, 10.0, 10)
    assert [(t.id, t.data) for t in claimed] == [("t1", {"n": 0}), ("t3", {"n": 2})]
    assert await _claim(store, "r2", 15.0) == []  # held by r1 until 20
    async with store.read() as tx:  # the claim is a lease
        assert [t.id for t in await tx.unleased_tasks(["completed"], 15.0)] == []


async def test_a_claim_skips_live_leases_and_takes_expired_ones(store: Store) -> None:
    await _tasks(store, ("t1", "completed"), ("t2", "completed"), ("t3", "completed"))
    async with store.transaction() as tx:
        await tx.take_lease("t1", "r1", 100.0)
        await tx.take_lease("t2", "r1", 5.0)
    assert await _claim(store, "r2", 10.0, limit=1) == ["t2"]
    assert await _claim(store, "r2", 10.0) == ["t3"]
    assert await _claim(store, "r3", 200.0) == ["t1", "t2", "t3"]  # every lease expired


async def test_claimants_at_once_never_share_a_task(store: Store, url: str) -> None:
    await _tasks(store, *((f"t{n:02}", "completed") for n in range(40)))
    others = [await open_store(url) if store.shared else store for _ in range(3)]
    try:
        got = await asyncio.gather(
            *(_claim(other, f"r{n}", 10.0, limit=7) for n, other in enumerate(others) for _ in "ab")
        )
    finally:
        for other in others:
            if other is not store:
                await other.close()
    claimed = [task_id for batch in got for task_id in batch]
    assert len(claimed) == len(set(claimed)) == 40
