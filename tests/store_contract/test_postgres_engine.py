"""What only the PostgreSQL engine promises: migrations applied once however many replicas start
together, writers serialized across processes, reads on one snapshot, the server's refusals as
StoreError, and a clear message when its driver is not installed."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from billing.store import StoreError, open_store
from billing.store.postgres import PostgresStore, migrations

postgresql = pytest.mark.postgresql


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [version for version, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert all(sql.strip() for _, sql in migrations())


@postgresql
async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(4)))
    try:
        for store in stores:
            assert await store.schema_version() == migrations()[-1][0]
    finally:
        for store in stores:
            await store.close()
    again = await PostgresStore.open(postgres_url)
    async with again.read() as tx:
        assert await tx.accounts() == []
    await again.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        applied = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in applied] == [v for v, _ in migrations()]


@postgresql
async def test_writers_in_different_processes_run_one_at_a_time(postgres_url: str) -> None:
    """Two stores (two pools, as two replicas would have) read-then-write the same value
    concurrently: no update is lost."""
    first, second = await PostgresStore.open(postgres_url), await PostgresStore.open(postgres_url)

    async def increment(store: PostgresStore) -> None:
        async with store.transaction() as tx:
            current = int(await tx.get_value("n") or "0")
            await asyncio.sleep(0.001)  # let the other replica's writer try to interleave here
            await tx.set_value("n", str(current + 1))

    try:
        await asyncio.gather(*(increment(s) for _ in range(20) for s in (first, second)))
        async with first.read() as tx:
            assert await tx.get_value("n") == "40"
    finally:
        await first.close()
        await second.close()


@postgresql
async def test_a_read_sees_one_snapshot_while_another_process_commits(postgres_url: str) -> None:
    reader, writer = await PostgresStore.open(postgres_url), await PostgresStore.open(postgres_url)
    try:
        async with writer.transaction() as tx:
            await tx.set_value("v", "before")
        async with reader.read() as snapshot:
            assert await snapshot.get_value("v") == "before"
            async with writer.transaction() as tx:
                await tx.set_value("v", "after")
                await tx.set_value("w", "new")
            assert await snapshot.get_value("v") == "before"
            assert await snapshot.get_value("w") is None
        async with reader.read() as later:
            assert await later.get_value("v") == "after"
    finally:
        await reader.close()
        await writer.close()


@postgresql
async def test_a_value_the_server_cannot_store_is_a_store_error(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    try:
        with pytest.raises(StoreError):
            async with store.transaction() as tx:
                await tx.set_value("k", "NUL\x00inside")  # PostgreSQL text holds no NUL
        async with store.read() as tx:
            assert await tx.get_value("k") is None
    finally:
        await store.close()


@postgresql
async def test_a_transaction_a_refused_statement_aborted_raises_instead_of_committing(
    postgres_url: str,
) -> None:
    """PostgreSQL aborts a transaction at its first failed statement and answers its COMMIT
    with a rollback, without an error: a caller that caught the failure and went on must not
    take the block for committed."""
    store = await open_store(postgres_url)
    try:
        with pytest.raises(StoreError, match="rolled back"):
            async with store.transaction() as tx:
                await tx.set_value("before", "written")
                with pytest.raises(StoreError):
                    await tx.set_value("k", "NUL\x00inside")
        async with store.read() as tx:
            assert await tx.get_value("before") is None
        async with store.transaction() as tx:  # the connection went back to the pool usable
            await tx.set_value("after", "written")
        async with store.read() as tx:
            assert await tx.get_value("after") == "written"
    finally:
        await store.close()


@postgresql
async def test_a_lookup_runs_one_read_and_nothing_more(postgres_url: str) -> None:
    """A lookup holds no snapshot: a second statement would see another moment, and a write
    would commit outside the writers' lock. Both are refused, and the store stays usable."""
    store = await open_store(postgres_url)
    try:
        async with store.transaction() as tx:
            await tx.set_value("v", "1")
        async with store.lookup() as tx:
            assert await tx.get_value("v") == "1"
            with pytest.raises(StoreError, match="one statement"):
                await tx.get_value("v")
        with pytest.raises(StoreError, match="only reads"):
            async with store.lookup() as tx:
                await tx.set_value("v", "2")
        async with store.read() as tx:
            assert await tx.get_value("v") == "1"
    finally:
        await store.close()


@postgresql
async def test_an_unreachable_server_is_a_store_error(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        await open_store(postgres_url.rsplit("/", 1)[0] + "/no_such_database")


def test_without_the_driver_the_error_says_what_to_install() -> None:
    # A fresh interpreter in which asyncpg cannot be imported, as without the [postgres] extra.
    script = (
        "import asyncio, sys\n"
        "sys.modules['asyncpg'] = None\n"
        "from billing.store import StoreError, open_store\n"
        "try:\n"
        "    asyncio.run(open_store('postgresql://u@127.0.0.1:9/db'))\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'satrouter[postgres]'" in done.stdout


@postgresql
async def test_a_singleton_is_held_by_one_replica_at_a_time(postgres_url: str) -> None:
    one, two = await open_store(postgres_url), await open_store(postgres_url)
    try:
        async with (
            one.singleton("topups") as first,
            two.singleton("topups") as second,
            two.singleton("other") as other,
        ):
            assert (first, second, other) == (True, False, True)
        async with two.singleton("topups") as taken_over:  # the holder let go
            assert taken_over
    finally:
        await one.close()
        await two.close()
