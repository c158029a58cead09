"""The audit trail: every money movement is chained; any edit or deletion is found."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from billing import audit, ledger
from billing.money import Msat, NanoUsd
from billing.store import Store, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    path = tmp_path / "audit.db"
    s = await open_store(f"sqlite:///{path}")
    async with s.transaction() as tx:
        await ledger.post(tx, ledger.deposit("a", Msat(5_000), "h1"))
        await ledger.post(tx, ledger.reserve("a", "t1", Msat(2_000)))
        await ledger.post(tx, ledger.settle("t1", "a", Msat(2_000), Msat(1_500), NanoUsd(900)))
        await audit.append(tx, "admin", {"action": "margins"}, 1.0)
    yield s, path
    await s.close()


async def test_every_money_movement_is_in_the_chain(store: tuple[Store, Path]) -> None:
    s, _ = store
    entries = [e async for e in audit.entries(s)]
    assert [e.kind for e in entries] == ["money", "money", "money", "admin"]
    assert [e.data["entry"] for e in entries[:3]] == ["deposit", "reserve", "settle"]
    assert entries[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    result = await audit.verify(s)
    assert result.ok and result.entries == 4


async def test_a_replayed_entry_adds_nothing(store: tuple[Store, Path]) -> None:
    s, _ = store
    async with s.transaction() as tx:
        assert not await ledger.post(tx, ledger.deposit("a", Msat(5_000), "h1"))
    assert len([e async for e in audit.entries(s)]) == 4


@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [
        ("UPDATE audit SET data = replace(data, '5000', '9000') WHERE seq = 1", 1),
        ("DELETE FROM audit WHERE seq = 2", 3),
        ("UPDATE audit SET at = at + 1 WHERE seq = 3", 3),
        # Cutting off the tail leaves a valid chain; the journal cross-check finds it.
        ("DELETE FROM audit WHERE seq >= 3", 3),
    ],
)
async def test_edits_and_deletions_are_found(
    store: tuple[Store, Path], tamper: str, first_bad: int
) -> None:
    s, path = store
    with sqlite3.connect(path) as raw:
        raw.execute(tamper)
    result = await audit.verify(s)
    assert not result.ok
    assert result.first_bad == first_bad


def test_cli_verify_and_export(store: tuple[Store, Path], tmp_path: Path) -> None:
    _, path = store
    env = {"SATROUTER_DATABASE_URL": f"sqlite:///{path}"}
    ok = subprocess.run(
        [sys.executable, "-m", "service", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "4 entries" in ok.stdout
    out = tmp_path / "audit.jsonl"
    subprocess.run(
        [sys.executable, "-m", "service", "audit", "export", "--output", str(out)],
        env=env,
        check=True,
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE audit SET kind = 'nothing' WHERE seq = 2")
    broken = subprocess.run(
        [sys.executable, "-m", "service", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert broken.returncode == 1
    assert "entry 2" in broken.stderr
