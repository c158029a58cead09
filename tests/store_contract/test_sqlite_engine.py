"""What only the SQLite engine promises: versioned migrations shipped with it, and WAL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from billing.store import open_store
from billing.store.sqlite import SqliteStore, migrations


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [version for version, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert all(sql.strip() for _, sql in migrations())


async def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    first = await SqliteStore.open(path)
    version = await first.schema_version()
    await first.close()
    again = await SqliteStore.open(path)
    assert await again.schema_version() == version == migrations()[-1][0]
    async with again.read() as tx:
        assert await tx.accounts() == []
    await again.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_the_only_process_on_a_file_holds_every_singleton(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/one.db")
    try:
        async with store.singleton("topups") as held:
            assert held
        assert not store.shared
    finally:
        await store.close()
