"""Spending caps as the engine meets them: what a call counted, the refusal of one over a cap,
and the correction to what it really spent (the caps themselves are :mod:`billing.budget`)."""

from __future__ import annotations

import time
from typing import Any

from billing import budget
from billing.budget import BudgetExceeded, Budgets
from billing.money import Msat, NanoUsd
from billing.store import TaskRow, Tx

from .record import record_of
from .refusals import Refusal


def counted(charge: Msat, cost: NanoUsd, now: float) -> dict[str, Any]:
    """What a call counted against the budgets, to correct at settlement."""
    return {"committed_at": now, "charge_msat": charge.value, "cost_nusd": cost.value}


def over_budget(budgets: Budgets, exc: BudgetExceeded) -> Refusal:
    return Refusal(
        "budget_exceeded",
        exc.detail,
        extra={"scope": exc.scope.split(":")[0], "period": exc.period},
        retry_after=budgets.seconds_left(exc.period, time.time()),
        should_retry=False,
    )


async def correct(tx: Tx, budgets: Budgets, task: TaskRow, charge: Msat, cost: NanoUsd) -> None:
    """Replace what the call counted against the budgets by what it really spent."""
    record = record_of(task)
    was = record.budget
    if not was:
        return
    await budget.correct(
        tx,
        budgets,
        record.payer,
        charge - Msat(was["charge_msat"]),
        cost - NanoUsd(was["cost_nusd"]),
        was["committed_at"],
    )
