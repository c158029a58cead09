"""OutboxTx: events in order, bounded reads after a position, consumers' cursors."""

from __future__ import annotations

from billing.store import Store


async def test_events_come_back_in_order_with_their_payloads(store: Store) -> None:
    async with store.read() as tx:
        assert await tx.last_event_id() == 0
        assert await tx.events_after(0) == []
    async with store.transaction() as tx:
        ids = [
            await tx.append_event("task.created", "t1", {"n": 1, "s": "é"}, 1.0),
            await tx.append_event("task.created", "t2", {"nested": {"a": [1, 2]}}, 2.0),
            await tx.append_event("task.paid", "t1", {}, 3.0),
        ]
    assert ids == sorted(ids) and len(set(ids)) == 3
    async with store.read() as tx:
        events = await tx.events_after(0)
        assert await tx.last_event_id() == ids[-1]
    assert [(e.id, e.topic, e.key, e.payload, e.created_at) for e in events] == [
        (ids[0], "task.created", "t1", {"n": 1, "s": "é"}, 1.0),
        (ids[1], "task.created", "t2", {"nested": {"a": [1, 2]}}, 2.0),
        (ids[2], "task.paid", "t1", {}, 3.0),
    ]


async def test_events_after_a_position_are_bounded(store: Store) -> None:
    async with store.transaction() as tx:
        ids = [await tx.append_event("e", f"k{i}", {"i": i}, float(i)) for i in range(5)]
    async with store.read() as tx:
        assert [e.id for e in await tx.events_after(ids[1])] == ids[2:]
        assert [e.id for e in await tx.events_after(ids[0], limit=2)] == ids[1:3]
        assert await tx.events_after(ids[-1]) == []


async def test_events_for_a_key_in_order(store: Store) -> None:
    async with store.transaction() as tx:
        for topic, key in [("a", "t1"), ("b", "t2"), ("c", "t1")]:
            await tx.append_event(topic, key, {}, 1.0)
    async with store.read() as tx:
        assert [e.topic for e in await tx.events_for("t1")] == ["a", "c"]
        assert await tx.events_for("t3") == []


async def test_ids_keep_increasing_after_a_rollback(store: Store) -> None:
    async with store.transaction() as tx:
        first = await tx.append_event("e", "k", {}, 1.0)
    try:
        async with store.transaction() as tx:
            await tx.append_event("e", "k", {}, 2.0)
            raise RuntimeError
    except RuntimeError:
        pass
    async with store.transaction() as tx:
        second = await tx.append_event("e", "k", {}, 3.0)
    assert second > first
    async with store.read() as tx:
        assert [e.created_at for e in await tx.events_after(0)] == [1.0, 3.0]


async def test_cursors_start_at_zero_and_move(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.cursor("callbacks") == 0
        await tx.set_cursor("callbacks", 7)
        await tx.set_cursor("engine", 3)
        await tx.set_cursor("callbacks", 9)
    async with store.read() as tx:
        assert await tx.cursor("callbacks") == 9
        assert await tx.cursor("engine") == 3
        assert await tx.cursor("other") == 0
