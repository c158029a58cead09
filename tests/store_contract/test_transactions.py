"""Store: transactions commit together or not at all; readers see only committed data; writers
run one at a time."""

from __future__ import annotations

import asyncio

import pytest

from billing.store import (
    InvoiceRow,
    PostingRow,
    Store,
    StoreError,
    TaskRow,
    open_store,
)


async def _write_one_of_each(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_accounts([("a", "msat", "asset", False), ("b", "msat", "income", False)], 1)
        await tx.insert_journal("k1", "x", "r1", None, "d", [PostingRow("a", "msat", 5)], 1.0)
        await tx.insert_invoice(InvoiceRow("h1", "lnbc1", 1000, "task", "t1", "open", 1.0, 9.0))
        await tx.insert_task(TaskRow("t1", "awaiting_payment", "ag", {"n": 1}, 1.0, 1.0))
        await tx.append_event("task.created", "t1", {"n": 1}, 1.0)
        await tx.set_value("v", "1")
        await tx.add_budget_usage("global", "day:1", 10, 20)
        await tx.insert_audit(1, 1.0, "money", "{}", "0" * 64, "f" * 64)
        raise RuntimeError("crash before commit")


async def _nothing_written(store: Store) -> None:
    async with store.read() as tx:
        assert await tx.accounts() == []
        assert await tx.journal_by_key("k1") is None
        assert await tx.invoice("h1") is None
        assert await tx.task("t1") is None
        assert await tx.events_after(0) == []
        assert await tx.last_event_id() == 0
        assert await tx.get_value("v") is None
        assert await tx.budget_usage("global", "day:1") == (0, 0)
        assert await tx.audit_tail() is None


async def test_an_exception_rolls_back_every_concept(store: Store) -> None:
    with pytest.raises(RuntimeError, match="crash"):
        await _write_one_of_each(store)
    await _nothing_written(store)


async def test_a_refused_write_rolls_back_what_came_before_it(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_task(TaskRow("t0", "paid", None, {}, 1.0, 1.0))
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.set_value("v", "1")
            await tx.insert_task(TaskRow("t0", "paid", None, {}, 2.0, 2.0))
    async with store.read() as tx:
        assert await tx.get_value("v") is None
        assert (await tx.task("t0")) == TaskRow("t0", "paid", None, {}, 1.0, 1.0)


async def test_a_committed_transaction_is_visible_to_later_readers(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.set_value("v", "1")
        await tx.insert_task(TaskRow("t1", "paid", None, {}, 1.0, 1.0))
    async with store.read() as tx:
        assert await tx.get_value("v") == "1"
        assert await tx.task("t1") is not None


async def test_readers_do_not_see_uncommitted_writes(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.set_value("v", "before")
    async with store.transaction() as tx:
        await tx.set_value("v", "after")
        await tx.insert_task(TaskRow("t1", "paid", None, {}, 1.0, 1.0))
        await tx.append_event("task.paid", "t1", {}, 1.0)
        async with store.read() as reader:
            assert await reader.get_value("v") == "before"
            assert await reader.task("t1") is None
            assert await reader.last_event_id() == 0
        assert await tx.get_value("v") == "after"  # the writer sees its own writes
    async with store.read() as reader:
        assert await reader.get_value("v") == "after"


async def test_writers_run_one_at_a_time(store: Store) -> None:
    """Read-then-write in many concurrent transactions loses no update."""

    async def increment() -> None:
        async with store.transaction() as tx:
            current = int(await tx.get_value("n") or "0")
            await asyncio.sleep(0)  # let every other writer try to interleave here
            await tx.set_value("n", str(current + 1))

    await asyncio.gather(*(increment() for _ in range(50)))
    async with store.read() as tx:
        assert await tx.get_value("n") == "50"


async def test_a_store_reopened_keeps_what_was_committed(url: str) -> None:
    first = await open_store(url)
    async with first.transaction() as tx:
        await tx.set_value("v", "kept")
    await first.close()
    again = await open_store(url)
    async with again.read() as tx:
        assert await tx.get_value("v") == "kept"
    await again.close()


async def test_an_unknown_database_url_is_refused() -> None:
    with pytest.raises(StoreError, match="unsupported"):
        await open_store("mysql://x")


async def test_a_lookup_reads_what_is_committed(store: Store) -> None:
    async with store.lookup() as tx:
        assert await tx.get_value("v") is None
    async with store.transaction() as tx:
        await tx.set_value("v", "1")
    async with store.lookup() as tx:
        assert await tx.get_value("v") == "1"
