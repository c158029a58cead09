"""Budget usage on PostgreSQL. Contract: ``BudgetsTx``."""

from __future__ import annotations

from .base import PostgresBase


class PostgresBudgets(PostgresBase):
    async def budget_usage(self, scope: str, period: str) -> tuple[int, int]:
        row = await self._one(
            "SELECT spent_msat, spent_nusd FROM budget_usage WHERE scope = $1 AND period = $2",
            scope,
            period,
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def add_budget_usage(self, scope: str, period: str, msat: int, nusd: int) -> None:
        await self._run(
            "INSERT INTO budget_usage (scope, period, spent_msat, spent_nusd) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (scope, period) DO UPDATE SET "
            "spent_msat = budget_usage.spent_msat + excluded.spent_msat, "
            "spent_nusd = budget_usage.spent_nusd + excluded.spent_nusd",
            scope,
            period,
            msat,
            nusd,
        )
