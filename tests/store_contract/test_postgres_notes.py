"""What only PostgreSQL's notes promise: the listening connection comes back after its backend
is terminated, and its listeners hear ``None`` (notes may have been missed) before new notes."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from billing.store import open_store
from billing.store.postgres.notify import APPLICATION

pytestmark = pytest.mark.postgresql


async def test_a_terminated_listening_backend_is_replaced(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    admin = await asyncpg.connect(postgres_url)
    try:
        async with store.listen("tasks") as notes:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                APPLICATION,
            )
            assert killed == 1
            # A bound on a wait that should not happen, not a speed target.
            assert await asyncio.wait_for(anext(notes), 30) is None
            async with store.transaction() as tx:
                await tx.notify("tasks", "after the loss")
            assert await asyncio.wait_for(anext(notes), 10) == "after the loss"
    finally:
        await admin.close()
        await store.close()
