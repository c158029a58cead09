"""NotifyTx and Store.listen: notes sent by a write transaction reach every listener after it
commits, in order, and never when it rolls back; bad channels and payloads are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from billing.store import Store, StoreError, open_store
from billing.store.notes import NOTE_MAX


async def _next(notes: AsyncIterator[str | None]) -> str | None:
    # A bound on a wait that should not happen, not a speed target.
    return await asyncio.wait_for(anext(notes), 10)


async def test_notes_arrive_after_commit_in_order(store: Store) -> None:
    async with store.listen("tasks") as notes, store.listen("tasks") as again:
        async with store.transaction() as tx:
            await tx.notify("tasks", "t1 paid")
            await tx.notify("tasks", "t1 running")
        async with store.transaction() as tx:
            await tx.notify("tasks", "t2 paid")
        assert [await _next(notes) for _ in range(3)] == ["t1 paid", "t1 running", "t2 paid"]
        assert [await _next(again) for _ in range(3)] == ["t1 paid", "t1 running", "t2 paid"]


async def test_a_rolled_back_transaction_sends_nothing(store: Store) -> None:
    async with store.listen("tasks") as notes:
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.notify("tasks", "lost")
                raise RuntimeError("abort")
        async with store.transaction() as tx:
            await tx.notify("tasks", "kept")
        assert await _next(notes) == "kept"


async def test_a_listener_hears_only_its_channel(store: Store) -> None:
    async with store.listen("tasks") as notes:
        async with store.transaction() as tx:
            await tx.notify("other", "not for tasks")
            await tx.notify("tasks", "for tasks")
        assert await _next(notes) == "for tasks"


async def test_another_store_on_the_database_hears_the_notes(store: Store, url: str) -> None:
    """Two processes on one database (on SQLite one process may open it: the same store)."""
    other = await open_store(url) if store.shared else store
    try:
        async with other.listen("tasks") as notes:
            async with store.transaction() as tx:
                await tx.notify("tasks", "from the first")
            assert await _next(notes) == "from the first"
    finally:
        if other is not store:
            await other.close()


async def test_bad_channels_payloads_and_read_snapshots_are_refused(store: Store) -> None:
    async with store.listen("tasks") as notes:
        for channel, payload in [
            ("Tasks; DROP", "x"),
            ("", "x"),
            ("tasks", "é" * (NOTE_MAX // 2 + 1)),
        ]:
            with pytest.raises(StoreError):
                async with store.transaction() as tx:
                    await tx.notify(channel, payload)
        with pytest.raises(StoreError):
            async with store.read() as tx:
                await tx.notify("tasks", "from a snapshot")
        async with store.transaction() as tx:
            await tx.notify("tasks", "x" * NOTE_MAX)
        assert await _next(notes) == "x" * NOTE_MAX
    with pytest.raises(StoreError):
        async with store.listen("Not A Name"):
            pass
