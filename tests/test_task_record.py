"""The typed task record: stored versioned (``"v": 2``), and the records of the release before
it (unversioned) still load, on a database that release made (``tests/fixtures/tasks-v1.db``:
a prepaid chat, tasks paid by invoice and from credit, a consensus, an unpaid task and a
refunded one)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from billing.margins import margins
from billing.store import TaskRow, open_store
from service.http.views import task_view
from service.tasks.record import VERSION, TaskRecord, record_of
from service.tasks.states import State, move

FIXTURE = Path(__file__).parent / "fixtures" / "tasks-v1.db"


async def _old_tasks(tmp_path: Path) -> tuple[Path, list[TaskRow]]:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM tasks ORDER BY created_at")]
    store = await open_store(f"sqlite:///{path}")
    try:
        async with store.read() as tx:
            tasks = [t for t in [await tx.task(i) for i in ids] if t is not None]
    finally:
        await store.close()
    return path, tasks


async def test_the_previous_releases_records_load_field_by_field(tmp_path: Path) -> None:
    _, tasks = await _old_tasks(tmp_path)
    assert len(tasks) == 6
    assert all("v" not in t.data for t in tasks)  # written before records were versioned
    for task in tasks:
        record = record_of(task)
        data = task.data
        assert record.kind == data["kind"] and record.payer == data["payer"]
        assert record.request == data["request"]
        assert record.quote.dump() == data["quote"]
        assert record.tier == data.get("tier") and record.privacy == data.get("privacy")
        for name in ("held_msat", "charge_msat", "change_msat", "cost_nusd", "model_used"):
            assert getattr(record, name) == data.get(name)
        assert record.extra == {}  # every key of the old form has its field
        view = task_view(task)  # what agents read of it
        assert view.price is not None and view.price.total_msat == data["quote"]["total_msat"]
        assert view.charge_msat == data.get("charge_msat")
    states = sorted(t.state for t in tasks)
    assert states == [
        "awaiting_payment",
        "reconciled",
        "reconciled",
        "reconciled",
        "reconciled",
        "refunded",
    ]
    consensus = [record_of(t) for t in tasks if "consensus" in t.data]
    assert consensus and consensus[0].calls and consensus[0].several


async def test_an_old_record_moved_is_stored_as_version_2_with_nothing_lost(
    tmp_path: Path,
) -> None:
    path, tasks = await _old_tasks(tmp_path)
    unpaid = next(t for t in tasks if t.state == State.AWAITING_PAYMENT)
    store = await open_store(f"sqlite:///{path}")
    try:
        async with store.transaction() as tx:
            moved = await move(tx, unpaid, State.EXPIRED)
        assert moved is not None
        async with store.read() as tx:
            stored = await tx.task(unpaid.id)
    finally:
        await store.close()
    assert stored is not None and stored.data["v"] == VERSION
    before, after = record_of(unpaid), record_of(stored)
    assert after == before
    assert {k: v for k, v in stored.data.items() if k != "v"} == {
        k: v for k, v in unpaid.data.items() if v is not None or k in ("tier", "privacy")
    }


async def test_margins_read_old_and_new_records_alike(tmp_path: Path) -> None:
    _, tasks = await _old_tasks(tmp_path)
    rewritten = [
        TaskRow(t.id, t.state, t.agent, record_of(t).dump(), t.created_at, t.updated_at)
        for t in tasks
    ]
    assert margins(rewritten, "model") == margins(tasks, "model")
    assert margins(rewritten, "tier") == margins(tasks, "tier")
    total = margins(tasks, "total")[0]
    assert total.tasks == 4 and total.refunded == 1


def test_a_record_of_a_newer_version_is_refused_and_unknown_fields_are_mistakes() -> None:
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True) as db:
        data = json.loads(db.execute("SELECT data FROM tasks LIMIT 1").fetchone()[0])
    record = TaskRecord.load(data)
    assert TaskRecord.load(record.dump()) == record
    with pytest.raises(ValueError, match="newer"):
        TaskRecord.load({**record.dump(), "v": VERSION + 1})
    with pytest.raises(TypeError, match="no chargee"):
        record.updated({"chargee": 1})
