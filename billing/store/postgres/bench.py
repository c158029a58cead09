"""Model benchmark results on PostgreSQL. Contract: ``BenchTx``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import PostgresBase


class PostgresBench(PostgresBase):
    async def insert_bench_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        await self._many(
            "INSERT INTO bench_results (run_id, at, model, prompt_id, ttft_ms, latency_ms, "
            "prompt_tokens, completion_tokens, cost_nusd, score, error) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            rows,
        )

    async def bench_results(self, model: str) -> list[tuple[Any, ...]]:
        rows = await self._all(
            "SELECT run_id, at, model, prompt_id, ttft_ms, latency_ms, prompt_tokens, "
            "completion_tokens, cost_nusd, score, error FROM bench_results WHERE model = $1 "
            "ORDER BY at, prompt_id",
            model,
        )
        return [tuple(r) for r in rows]
