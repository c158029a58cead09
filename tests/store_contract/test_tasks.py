"""TasksTx: tasks with a JSON document, compare-and-set state changes, ordered queries."""

from __future__ import annotations

import pytest

from billing.store import Store, StoreError, TaskRow


def _task(task_id: str, state: str, created: float, updated: float | None = None) -> TaskRow:
    return TaskRow(task_id, state, "agent", {"id": task_id}, created, updated or created)


async def _insert(store: Store, *tasks: TaskRow) -> None:
    async with store.transaction() as tx:
        for task in tasks:
            await tx.insert_task(task)


async def test_a_task_reads_back_as_written(store: Store) -> None:
    row = TaskRow("t1", "awaiting_payment", None, {"quote": {"msat": 5}, "l": [1, "x"]}, 1.5, 2.5)
    await _insert(store, row)
    async with store.read() as tx:
        assert await tx.task("t1") == row
        assert await tx.task("t2") is None


async def test_a_task_id_is_stored_once(store: Store) -> None:
    await _insert(store, _task("t1", "paid", 1.0))
    with pytest.raises(StoreError):
        await _insert(store, _task("t1", "running", 2.0))
    async with store.read() as tx:
        assert await tx.task("t1") == _task("t1", "paid", 1.0)


async def test_update_is_a_compare_and_set_on_the_state(store: Store) -> None:
    await _insert(store, _task("t1", "awaiting_payment", 1.0))
    async with store.transaction() as tx:
        assert await tx.update_task(
            "t1", state="paid", data={"x": 2}, expected_state="awaiting_payment", now=3.0
        )
        # A second writer that read the old state changes nothing.
        assert not await tx.update_task(
            "t1", state="expired", data={}, expected_state="awaiting_payment", now=4.0
        )
        assert not await tx.update_task(
            "missing", state="paid", data={}, expected_state="awaiting_payment", now=4.0
        )
    async with store.read() as tx:
        assert await tx.task("t1") == TaskRow("t1", "paid", "agent", {"x": 2}, 1.0, 3.0)


async def test_tasks_in_states_oldest_first(store: Store) -> None:
    await _insert(
        store,
        _task("c", "paid", 3.0),
        _task("a", "running", 1.0),
        _task("b", "paid", 2.0),
        _task("d", "reconciled", 0.5),
    )
    async with store.read() as tx:
        assert [t.id for t in await tx.tasks_in_states(["paid", "running"])] == ["a", "b", "c"]
        assert [t.id for t in await tx.tasks_in_states(["reconciled"])] == ["d"]
        assert await tx.tasks_in_states(["failed"]) == []


async def test_tasks_updated_between_is_half_open_and_in_change_order(store: Store) -> None:
    await _insert(
        store,
        _task("late", "reconciled", 0.0, 30.0),
        _task("edge", "reconciled", 0.0, 20.0),
        _task("early", "reconciled", 0.0, 10.0),
        _task("mid", "reconciled", 0.0, 15.0),
        _task("other", "failed", 0.0, 15.0),
    )
    async with store.read() as tx:
        ids = [t.id for t in await tx.tasks_updated_between(10.0, 20.0, ["reconciled"])]
        assert ids == ["early", "mid"]
        ids = [t.id for t in await tx.tasks_updated_between(None, None, ["reconciled"])]
        assert ids == ["early", "mid", "edge", "late"]
        ids = [t.id for t in await tx.tasks_updated_between(15.0, None, ["reconciled", "failed"])]
        assert sorted(ids[:2]) == ["mid", "other"] and ids[2:] == ["edge", "late"]
        ids = [t.id for t in await tx.tasks_updated_between(None, 15.0, ["reconciled"])]
        assert ids == ["early"]
