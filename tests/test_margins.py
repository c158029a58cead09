"""Margins: exact aggregates, the admin API and the CLI showing the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing.margins import margins, parse_since, to_csv, to_table
from billing.store import Store, TaskRow, open_store
from service.app import create_app
from service.demo.loopback import serve

from .conftest import offline_service, offline_settings

NOW = time.time()


def _task(
    task_id: str,
    state: str,
    *,
    model: str,
    payer: str,
    charge: int = 0,
    cost: int = 0,
    provisional: bool = False,
    at: float = NOW,
) -> TaskRow:
    data: dict[str, Any] = {
        "kind": "invoice",
        "payer": payer,
        "model_used": model,
        "quote": {"model": model, "btc_usd": "100000"},
    }
    if state == "reconciled":
        data.update(charge_msat=charge, cost_nusd=cost, provisional=provisional, reconciled_at=at)
    return TaskRow(task_id, state, payer, data, at, at)


TASKS = [
    _task("a", "reconciled", model="m1", payer="p1", charge=3_400, cost=2_000_000),
    _task("b", "reconciled", model="m1", payer="p2", charge=1_000, cost=500_000),
    _task(
        "c", "reconciled", model="m2", payer="p1", charge=2_000, cost=1_000_000, provisional=True
    ),
    _task("d", "refunded", model="m2", payer="p2"),
]
RUNNING = _task("e", "running", model="m2", payer="p2")  # not finished: not counted


def test_aggregates_by_model_are_exact() -> None:
    m1, m2 = margins([*TASKS, RUNNING], "model")
    assert (m1.group, m1.tasks, m1.revenue_msat, m1.cost_nusd, m1.cost_msat, m1.margin_msat) == (
        "m1",
        2,
        4_400,
        2_500_000,
        2_500,
        1_900,
    )
    assert str(m1.margin_pct) == "43.18"
    assert (m2.group, m2.tasks, m2.revenue_msat, m2.failed, m2.refunded) == ("m2", 1, 0, 1, 1)
    assert (m2.provisional_tasks, m2.provisional_revenue_msat, m2.provisional_cost_nusd) == (
        1,
        2_000,
        1_000_000,
    )
    assert m2.margin_pct is None


def test_other_groupings_and_outputs() -> None:
    by_agent = {r.group: r for r in margins(TASKS, "agent")}
    assert by_agent["p1"].revenue_msat == 3_400
    assert by_agent["p2"].refunded == 1
    (total,) = margins(TASKS, "total")
    assert total.margin_msat == 1_900
    day = time.strftime("%Y-%m-%d", time.gmtime(NOW))
    assert [r.group for r in margins(TASKS, "day")] == [day]
    assert to_csv(margins(TASKS, "model")).splitlines()[1].startswith("m1,2,4400,2500000,2500,")
    assert "43.18" in to_table(margins(TASKS, "model"), "model")
    with pytest.raises(ValueError, match="group by"):
        margins(TASKS, "colour")


def test_since_accepts_dates_and_relative_times() -> None:
    assert parse_since("24h", now=100_000) == 100_000 - 86_400
    assert parse_since("2026-11-20") == 1_795_132_800
    with pytest.raises(ValueError, match="not a time"):
        parse_since("yesterday")


@pytest.fixture
async def stored(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    path = tmp_path / "margins.db"
    store = await open_store(f"sqlite:///{path}")
    async with store.transaction() as tx:
        for task in TASKS:
            await tx.insert_task(task)
    yield store, path
    await store.close()


async def test_api_and_cli_show_the_same_numbers(
    stored: tuple[Store, Path], tmp_path: Path
) -> None:
    _, path = stored
    settings = offline_settings(
        tmp_path, database_url=f"sqlite:///{path}", admin_token="admin-secret-for-tests"
    )
    app = create_app(settings)
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/admin/margins")).status_code == 401
            wrong = await http.get("/admin/margins", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            auth = {"Authorization": "Bearer admin-secret-for-tests"}
            api = (
                await http.get("/admin/margins", headers=auth, params={"group_by": "model"})
            ).json()
            csv_text = (
                await http.get("/admin/margins", headers=auth, params={"format": "csv"})
            ).text
            bad = await http.get("/admin/margins", headers=auth, params={"group_by": "x"})
            assert bad.status_code == 400
    finally:
        await runner.cleanup()
    cli = subprocess.run(
        [sys.executable, "-m", "service", "margins", "--json", "--group-by", "model"],
        capture_output=True,
        text=True,
        check=True,
        env={"SATROUTER_DATABASE_URL": f"sqlite:///{path}", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(cli.stdout) == api["rows"]
    assert csv_text == to_csv(margins(TASKS, "model"))
    table = subprocess.run(
        [sys.executable, "-m", "service", "margins", "--since", "1d"],
        capture_output=True,
        text=True,
        check=True,
        env={"SATROUTER_DATABASE_URL": f"sqlite:///{path}"},
    )
    assert "m1" in table.stdout
    assert "43.18" in table.stdout


async def test_admin_is_off_without_a_token(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        response = await http.get("/admin/margins", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert response.json()["type"].endswith("admin_disabled")
