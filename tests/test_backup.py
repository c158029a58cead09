"""``satrouter backup`` while the service takes payments, ``satrouter restore`` into a new file:
the copy passes the integrity and ledger checks with the same balances; restore refuses a
database a running service holds, a damaged copy, and a newer schema."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest

from billing import ledger
from billing.store import open_store
from billing.store.backup import BackupError, backup, check

from .conftest import CHEAP, HELLO, Service, satrouter_command

pytestmark = pytest.mark.lnbits


async def _satrouter(database: Path, *args: str) -> tuple[int, str]:
    return await satrouter_command(*args, database_url=f"sqlite:///{database}")


def _balances(database: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT code, balance FROM accounts ORDER BY code").fetchall())
    finally:
        conn.close()


async def _ledger_ok(database: Path) -> ledger.LedgerCheck:
    store = await open_store(f"sqlite:///{database}")
    try:
        async with store.read() as tx:
            return await ledger.check(tx)
    finally:
        await store.close()


async def test_backup_while_paying_and_restore_into_a_new_file(
    service: Service, tmp_path: Path
) -> None:
    live = tmp_path / "satrouter.db"
    stop = asyncio.Event()
    calls = 0

    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        account = await service.funded_account(http, 5_000)

        async def pay_for_chats() -> None:
            nonlocal calls
            while not stop.is_set():
                answer = await http.post(
                    "/v1/chat/completions",
                    json={"model": CHEAP, "messages": HELLO, "max_tokens": 10},
                    headers=account["auth"],
                )
                assert answer.status_code == 200, answer.text
                calls += 1

        writers = [asyncio.create_task(pay_for_chats()) for _ in range(3)]
        while calls < 3:
            await asyncio.sleep(0.05)
        during = tmp_path / "during.db"
        code, out = await _satrouter(live, "backup", str(during))
        assert code == 0, out
        at_backup = calls
        # A running service holds the database: restore refuses, and says how to stop it.
        code, out = await _satrouter(live, "restore", str(during), "--replace")
        assert code == 1
        assert "stop the service first" in out
        while calls < at_backup + 3:  # the service kept paying while the copy was made
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*writers)

    # A backup of a quiet database: its balances are the live ones.
    for _ in range(50):
        before = _balances(live)
        after_copy = tmp_path / "after.db"
        after_copy.unlink(missing_ok=True)
        code, out = await _satrouter(live, "backup", str(after_copy))
        assert code == 0, out
        if _balances(live) == before:
            break
        await asyncio.sleep(0.2)  # a reconciliation landed meanwhile: take it again
    else:
        raise AssertionError("the live database never stood still")

    for copy, name in ((during, "restored-during.db"), (after_copy, "restored-after.db")):
        restored = tmp_path / name
        code, out = await _satrouter(restored, "restore", str(copy))
        assert code == 0, out
        result = await _ledger_ok(restored)
        assert result.ok, result.problems
        assert _balances(restored) == _balances(copy)
    assert _balances(tmp_path / "restored-after.db") == before
    assert _balances(tmp_path / "restored-during.db") != before  # it was taken mid-way
    # Restoring over an existing database needs --replace.
    code, out = await _satrouter(tmp_path / "restored-after.db", "restore", str(during))
    assert code == 1
    assert "--replace" in out


def test_restore_refuses_a_damaged_or_newer_copy(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x01" * 4000)
    with pytest.raises(BackupError, match="garbage.db"):
        check(garbage)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(BackupError, match="not a satrouter database"):
        check(other)

    async def make() -> None:
        store = await open_store(f"sqlite:///{tmp_path}/new.db")
        await store.close()

    asyncio.run(make())
    newer = tmp_path / "new.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 9999")
    conn.close()
    with pytest.raises(BackupError, match="schema version 9999"):
        check(newer)


def test_a_backup_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The copy holds the L402 root keys and the task-token secret."""

    async def make() -> None:
        store = await open_store(f"sqlite:///{tmp_path}/live.db")
        await store.close()

    asyncio.run(make())
    copied = backup(tmp_path / "live.db", tmp_path / "copy.db")
    assert copied.path.stat().st_mode & 0o777 == 0o600
