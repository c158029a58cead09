"""LeasesTx: running work leased to one replica, renewed by it, taken over once expired."""

from __future__ import annotations

from billing.store import Store, TaskRow


async def _running(store: Store, *ids: str) -> None:
    async with store.transaction() as tx:
        for n, task_id in enumerate(ids):
            await tx.insert_task(TaskRow(task_id, "running", "a", {}, 1.0 + n, 1.0 + n))


async def _unleased(store: Store, now: float) -> list[str]:
    async with store.read() as tx:
        return [t.id for t in await tx.unleased_tasks(["running"], now)]


async def test_a_task_without_a_lease_is_unleased(store: Store) -> None:
    await _running(store, "t1", "t2")
    async with store.transaction() as tx:
        await tx.take_lease("t2", "r1", 100.0)
    assert await _unleased(store, 50.0) == ["t1"]
    assert await _unleased(store, 101.0) == ["t1", "t2"]  # expired: unleased again


async def test_renewing_extends_only_the_owners_leases(store: Store) -> None:
    await _running(store, "t1", "t2", "t3")
    async with store.transaction() as tx:
        await tx.take_lease("t1", "r1", 10.0)
        await tx.take_lease("t2", "r1", 10.0)
        await tx.take_lease("t3", "r2", 10.0)
        assert await tx.renew_leases("r1", 50.0) == 2
        assert await tx.renew_leases("nobody", 50.0) == 0
    assert await _unleased(store, 20.0) == ["t3"]


async def test_a_live_lease_cannot_be_claimed_an_expired_one_can(store: Store) -> None:
    await _running(store, "t1", "t2")
    async with store.transaction() as tx:
        await tx.take_lease("t1", "r1", 10.0)
        assert not await tx.claim_lease("t1", "r2", 40.0, now=5.0)
        assert await tx.claim_lease("t1", "r2", 40.0, now=11.0)
        assert not await tx.claim_lease("t1", "r3", 40.0, now=12.0)  # r2 holds it now
        assert await tx.claim_lease("t2", "r3", 40.0, now=12.0)  # none yet: claimed
        # the old owner's heartbeat no longer reaches the task it lost
        assert await tx.renew_leases("r1", 100.0) == 0
    assert await _unleased(store, 39.0) == []


async def test_a_dropped_lease_is_gone_and_only_listed_states_count(store: Store) -> None:
    await _running(store, "t1")
    async with store.transaction() as tx:
        await tx.take_lease("t1", "r1", 10.0)
        await tx.drop_lease("t1")
        await tx.drop_lease("never-leased")
        assert await tx.renew_leases("r1", 50.0) == 0
    assert await _unleased(store, 5.0) == ["t1"]
    async with store.read() as tx:
        assert await tx.unleased_tasks(["paid"], 5.0) == []


async def test_a_lease_rolled_back_with_its_transaction_was_never_taken(store: Store) -> None:
    await _running(store, "t1")
    try:
        async with store.transaction() as tx:
            await tx.take_lease("t1", "r1", 10.0)
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    assert await _unleased(store, 5.0) == ["t1"]
