"""DeliveriesTx: callbacks queued per destination, oldest first, bounded, finished once."""

from __future__ import annotations

from billing.store import DeliveriesTx, Store, Tx

A, B, C = "https://a.example/cb", "https://b.example/cb", "https://c.example/cb"


async def _queue(tx: Tx, task: str, destination: str) -> int:
    event = await tx.append_event("task.completed", task, {}, 1.0)
    await tx.insert_delivery(event, task, destination, "pending", 1.0)
    return event


async def _pending(tx: DeliveriesTx, destination: str) -> list[str]:
    return [d.task_id for d in await tx.pending_deliveries(destination, 100)]


async def test_destinations_waiting_longest_first_and_bounded(store: Store) -> None:
    async with store.transaction() as tx:
        for task, destination in [("t1", B), ("t2", A), ("t3", B), ("t4", C)]:
            await _queue(tx, task, destination)
    async with store.read() as tx:
        assert await tx.pending_destinations(10) == [B, A, C]
        assert await tx.pending_destinations(2) == [B, A]


async def test_a_destinations_deliveries_in_queue_order_and_bounded(store: Store) -> None:
    async with store.transaction() as tx:
        events = [await _queue(tx, f"t{i}", A) for i in range(4)]
        await _queue(tx, "other", B)
    async with store.read() as tx:
        rows = await tx.pending_deliveries(A, 10)
        assert [(d.event_id, d.task_id, d.destination, d.attempts) for d in rows] == [
            (e, f"t{i}", A, 0) for i, e in enumerate(events)
        ]
        assert [d.task_id for d in await tx.pending_deliveries(A, 2)] == ["t0", "t1"]
        assert await tx.count_pending_deliveries(A) == 4
        assert await tx.count_pending_deliveries(C) == 0


async def test_a_delivered_row_goes_and_a_failed_one_is_no_longer_pending(store: Store) -> None:
    async with store.transaction() as tx:
        for task in ("t1", "t2", "t3"):
            await _queue(tx, task, A)
    async with store.transaction() as tx:
        first, second, _ = await tx.pending_deliveries(A, 10)
        await tx.finish_delivery(first.id, delivered=True, attempts=1, error=None, now=2.0)
        await tx.finish_delivery(second.id, delivered=False, attempts=5, error="timeout", now=2.0)
    async with store.read() as tx:
        assert await _pending(tx, A) == ["t3"]
        assert await tx.count_pending_deliveries(A) == 1
    async with store.transaction() as tx:
        (last,) = await tx.pending_deliveries(A, 10)
        await tx.finish_delivery(last.id, delivered=False, attempts=2, error="500", now=3.0)
    async with store.read() as tx:
        assert await tx.pending_destinations(10) == []


async def test_a_delivery_queued_as_failed_is_not_pending(store: Store) -> None:
    async with store.transaction() as tx:
        event = await tx.append_event("task.completed", "t1", {}, 1.0)
        await tx.insert_delivery(event, "t1", A, "failed", 1.0)
    async with store.read() as tx:
        assert await tx.pending_destinations(10) == []
        assert await tx.count_pending_deliveries(A) == 0
