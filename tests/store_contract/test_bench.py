"""BenchTx: model benchmark results per model, oldest first, one per run, model and prompt."""

from __future__ import annotations

import pytest

from billing.store import BenchRecord, Store, StoreError


def _result(run: str, at: float, model: str, prompt: str, error: str | None = None) -> BenchRecord:
    return (run, at, model, prompt, 120.5, 900.0, 40, 60, 1_234, 0.75, error)


async def test_results_per_model_oldest_first_then_by_prompt(store: Store) -> None:
    rows = [
        _result("r2", 2.0, "m/a", "p2"),
        _result("r1", 1.0, "m/a", "p9", error="timeout"),
        _result("r2", 2.0, "m/a", "p1"),
        _result("r1", 1.0, "m/b", "p1"),
    ]
    async with store.transaction() as tx:
        await tx.insert_bench_results(rows)
    async with store.read() as tx:
        assert await tx.bench_results("m/a") == [rows[1], rows[2], rows[0]]
        assert await tx.bench_results("m/b") == [rows[3]]
        assert await tx.bench_results("m/c") == []


async def test_a_run_model_and_prompt_is_stored_once(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_bench_results([_result("r1", 1.0, "m/a", "p1")])
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.insert_bench_results([_result("r1", 5.0, "m/a", "p1")])
    async with store.read() as tx:
        assert await tx.bench_results("m/a") == [_result("r1", 1.0, "m/a", "p1")]
