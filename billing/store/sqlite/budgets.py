"""Budget usage on SQLite. Contract: ``BudgetsTx``."""

from __future__ import annotations

from .base import SqliteBase


class SqliteBudgets(SqliteBase):
    async def budget_usage(self, scope: str, period: str) -> tuple[int, int]:
        row = self._one(
            "SELECT spent_msat, spent_nusd FROM budget_usage WHERE scope = ? AND period = ?",
            (scope, period),
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def add_budget_usage(self, scope: str, period: str, msat: int, nusd: int) -> None:
        self._run(
            "INSERT INTO budget_usage (scope, period, spent_msat, spent_nusd) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (scope, period) DO UPDATE SET "
            "spent_msat = spent_msat + excluded.spent_msat, "
            "spent_nusd = spent_nusd + excluded.spent_nusd",
            (scope, period, msat, nusd),
        )
