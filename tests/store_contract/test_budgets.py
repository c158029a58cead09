"""BudgetsTx: what each scope spent in each period, added up, never replaced."""

from __future__ import annotations

import asyncio

from billing.store import Store


async def test_usage_starts_at_zero_and_adds_up_per_scope_and_period(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.budget_usage("global", "day:2026-01-01") == (0, 0)
        await tx.add_budget_usage("global", "day:2026-01-01", 100, 7)
        await tx.add_budget_usage("global", "day:2026-01-01", 50, 3)
        await tx.add_budget_usage("global", "day:2026-01-02", 1, 1)
        await tx.add_budget_usage("agent:a", "day:2026-01-01", 9, 9)
    async with store.read() as tx:
        assert await tx.budget_usage("global", "day:2026-01-01") == (150, 10)
        assert await tx.budget_usage("global", "day:2026-01-02") == (1, 1)
        assert await tx.budget_usage("agent:a", "day:2026-01-01") == (9, 9)
        assert await tx.budget_usage("agent:b", "day:2026-01-01") == (0, 0)


async def test_concurrent_additions_are_all_counted(store: Store) -> None:
    async def add() -> None:
        async with store.transaction() as tx:
            await tx.add_budget_usage("global", "month:2026-01", 3, 2)

    await asyncio.gather(*(add() for _ in range(40)))
    async with store.read() as tx:
        assert await tx.budget_usage("global", "month:2026-01") == (120, 80)
