"""Model benchmark results on SQLite. Contract: ``BenchTx``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import SqliteBase


class SqliteBench(SqliteBase):
    async def insert_bench_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._many(
            "INSERT INTO bench_results (run_id, at, model, prompt_id, ttft_ms, latency_ms, "
            "prompt_tokens, completion_tokens, cost_nusd, score, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    async def bench_results(self, model: str) -> list[tuple[Any, ...]]:
        return [
            tuple(r)
            for r in self._all(
                "SELECT run_id, at, model, prompt_id, ttft_ms, latency_ms, prompt_tokens, "
                "completion_tokens, cost_nusd, score, error FROM bench_results WHERE model = ? "
                "ORDER BY at, prompt_id",
                (model,),
            )
        ]
