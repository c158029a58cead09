"""``satrouter migrate``: the schema brought up to date by a one-shot command (the compose
service and the Kubernetes Job that run before the replicas)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from service.cli import main


def test_migrate_creates_the_schema_and_exits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "satrouter.db"
    monkeypatch.setenv("SATROUTER_DATABASE_URL", f"sqlite:///{db}")
    assert main(["migrate"]) == 0
    assert "schema up to date" in capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert version >= 1 and "tasks" in tables
    assert main(["migrate"]) == 0  # again: nothing to do
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (version,)


def test_migrate_names_an_unsupported_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SATROUTER_DATABASE_URL", "mysql://db/satrouter")
    assert main(["migrate"]) == 1
    assert "satrouter migrate: unsupported database URL mysql" in capsys.readouterr().err


@pytest.mark.postgresql
def test_migrate_creates_the_schema_on_postgresql(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    from billing.store.postgres import migrations

    monkeypatch.setenv("SATROUTER_DATABASE_URL", postgres_url)
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0  # again: nothing to do
    assert capsys.readouterr().out.count("schema up to date") == 2

    async def applied() -> tuple[list[int], bool]:
        conn = await asyncpg.connect(postgres_url)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
            has_tasks = await conn.fetchval("SELECT to_regclass('tasks') IS NOT NULL")
        finally:
            await conn.close()
        return versions, bool(has_tasks)

    assert asyncio.run(applied()) == ([v for v, _ in migrations()], True)
