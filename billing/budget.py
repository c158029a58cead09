"""Spending caps: global and per agent, per day and per month, in dollars (OpenRouter cost) or
sats (what agents are charged).

Spend is counted when money is committed to a call (a reservation, or a task's paid invoice) at
the call's maximum, inside the same transaction, and corrected to the actual amounts when the
call is settled or refunded. Writers are serialized, so concurrent calls can never together
exceed a cap: the check and the count are one step. Periods start at a configured hour in a
configured time zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from .money import Msat, NanoUsd
from .store import BudgetsTx


class BudgetExceeded(Exception):
    def __init__(self, scope: str, period: str, detail: str) -> None:
        super().__init__(detail)
        self.scope = scope
        self.period = period
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Cap:
    usd: NanoUsd | None = None
    sats: Msat | None = None


@dataclass(frozen=True, slots=True)
class Budgets:
    global_daily: Cap = field(default_factory=Cap)
    global_monthly: Cap = field(default_factory=Cap)
    agent_daily: Cap = field(default_factory=Cap)
    agent_monthly: Cap = field(default_factory=Cap)
    reset_hour: int = 0
    time_zone: str = "UTC"

    @property
    def any(self) -> bool:
        return any(c.usd is not None or c.sats is not None for c in self._caps())

    def _caps(self) -> tuple[Cap, ...]:
        return (self.global_daily, self.global_monthly, self.agent_daily, self.agent_monthly)

    def periods(self, now: float) -> tuple[str, str]:
        """The current day and month keys, shifted so that a day starts at ``reset_hour``."""
        local = datetime.fromtimestamp(now, ZoneInfo(self.time_zone)) - timedelta(
            hours=self.reset_hour
        )
        return f"day:{local:%Y-%m-%d}", f"month:{local:%Y-%m}"

    def seconds_left(self, period: str, now: float) -> int:
        """Whole seconds from ``now`` until ``period`` (a key of :meth:`periods`) ends, when its
        caps start again from nothing."""
        unit, _, start = period.partition(":")
        year, month, day = (int(p) for p in (start + "-01").split("-")[:3])
        if unit == "day":
            ends = date(year, month, day) + timedelta(days=1)
        else:
            ends = date(year + month // 12, month % 12 + 1, 1)
        zone = ZoneInfo(self.time_zone)
        end = datetime(ends.year, ends.month, ends.day, tzinfo=zone) + timedelta(
            hours=self.reset_hour
        )
        return max(0, math.ceil(end.timestamp() - now))

    def scopes(self, payer: str, now: float) -> list[tuple[str, str, Cap]]:
        """The capped scopes a call by ``payer`` counts against (uncapped ones keep no count)."""
        if not self.any:
            return []
        day, month = self.periods(now)
        scopes = [
            ("global", day, self.global_daily),
            ("global", month, self.global_monthly),
            (f"agent:{payer}", day, self.agent_daily),
            (f"agent:{payer}", month, self.agent_monthly),
        ]
        return [s for s in scopes if s[2].usd is not None or s[2].sats is not None]


async def check(
    tx: BudgetsTx, budgets: Budgets, payer: str, charge: Msat, cost: NanoUsd, now: float
) -> None:
    """Raise :class:`BudgetExceeded` if a call of this maximum would exceed any cap."""
    for scope, period, cap in budgets.scopes(payer, now):
        spent_msat, spent_nusd = await tx.budget_usage(scope, period)
        kind = {"day": "daily", "month": "monthly"}[period.split(":")[0]]
        if cap.sats is not None and spent_msat + charge.value > cap.sats.value:
            raise BudgetExceeded(
                scope,
                period,
                f"{scope} {kind} cap of {cap.sats.value // 1000} sat would be exceeded",
            )
        if cap.usd is not None and spent_nusd + cost.value > cap.usd.value:
            raise BudgetExceeded(
                scope, period, f"{scope} {kind} cap of ${cap.usd.to_usd()} would be exceeded"
            )


async def commit(
    tx: BudgetsTx, budgets: Budgets, payer: str, charge: Msat, cost: NanoUsd, now: float
) -> None:
    """Count a call's maximum against every cap, all or nothing, inside ``tx``."""
    await check(tx, budgets, payer, charge, cost, now)
    for scope, period, _ in budgets.scopes(payer, now):
        await tx.add_budget_usage(scope, period, charge.value, cost.value)


async def correct(
    tx: BudgetsTx,
    budgets: Budgets,
    payer: str,
    charge_delta: Msat,
    cost_delta: NanoUsd,
    committed_at: float,
) -> None:
    """Replace what :func:`commit` counted by what was actually spent (deltas may be negative;
    the periods are those the call was committed in)."""
    for scope, period, _ in budgets.scopes(payer, committed_at):
        await tx.add_budget_usage(scope, period, charge_delta.value, cost_delta.value)


async def state(
    tx: BudgetsTx, budgets: Budgets, payer: str | None, now: float
) -> list[dict[str, object]]:
    """Each configured cap with what is spent against it (for agents and operators)."""
    out: list[dict[str, object]] = []
    for scope, period, cap in budgets.scopes(payer or "-", now):
        if (cap.usd is None and cap.sats is None) or (payer is None and scope != "global"):
            continue
        spent_msat, spent_nusd = await tx.budget_usage(scope, period)
        out.append(
            {
                "scope": "agent" if scope.startswith("agent:") else scope,
                "period": period,
                "cap_usd": str(cap.usd.to_usd()) if cap.usd else None,
                "cap_sat": cap.sats.value // 1000 if cap.sats else None,
                "spent_usd": str(NanoUsd(spent_nusd).to_usd()),
                "spent_sat": spent_msat / 1000,
            }
        )
    return out
