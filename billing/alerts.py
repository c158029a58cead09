"""Spend alerts: thresholds, what crossed them, and firing once per crossing.

Readings are taken over the current UTC day: OpenRouter spend, each agent's spend, the margin,
the credits' runway, and the largest gap between a call's inline cost and its reconciled cost.
An alert fires when its reading crosses the threshold and not again until it has come back;
that state is kept in the database so a restart does not fire everything again.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from .holdings import Holding
from .ledger import LLM_COST
from .margins import margins
from .money import Msat, NanoUsd, Rounding
from .runway import Runway
from .store import KeysTx, Store

STATE_KEY = "alerts.crossed"


@dataclass(frozen=True, slots=True)
class Thresholds:
    daily_spend: NanoUsd | None = None  # OpenRouter spend today above this
    agent_daily_spend: Msat | None = None  # one agent's charges today above this
    min_margin_pct: Decimal | None = None  # today's margin below this percentage
    min_runway_hours: Decimal | None = None  # credits last fewer hours than this
    max_discrepancy_pct: Decimal | None = None  # reconciled cost off the inline cost by more

    @property
    def any(self) -> bool:
        return any(
            v is not None
            for v in (
                self.daily_spend,
                self.agent_daily_spend,
                self.min_margin_pct,
                self.min_runway_hours,
                self.max_discrepancy_pct,
            )
        )


@dataclass(frozen=True, slots=True)
class Reading:
    key: str  # stable per alert (and per agent for agent spend)
    crossed: bool
    message: str


def day_start(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


async def readings(
    store: Store, limits: Thresholds, runway: Runway | None, now: float | None = None
) -> list[Reading]:
    """The current value of every configured alert."""
    now = time.time() if now is None else now
    since = day_start(now)
    async with store.read() as tx:
        spent = NanoUsd(await tx.account_flow(LLM_COST.code, since))
        tasks = await tx.tasks_updated_between(since, None, ("reconciled", "failed", "refunded"))
    out: list[Reading] = []
    if limits.daily_spend is not None:
        out.append(
            Reading(
                "daily_spend",
                spent > limits.daily_spend,
                f"OpenRouter spend today ${spent.to_usd()} is above ${limits.daily_spend.to_usd()}",
            )
        )
    if limits.agent_daily_spend is not None:
        per_agent: dict[str, int] = defaultdict(int)
        for task in tasks:
            if task.state == "reconciled":
                per_agent[str(task.data.get("payer"))] += int(task.data["charge_msat"])
        for agent, charged in sorted(per_agent.items()):
            out.append(
                Reading(
                    f"agent_spend:{agent}",
                    charged > limits.agent_daily_spend.value,
                    f"agent {agent} spent {charged} msat today, above "
                    f"{limits.agent_daily_spend.value} msat",
                )
            )
    if limits.min_margin_pct is not None:
        rows = margins(tasks, "total")
        pct = rows[0].margin_pct if rows else None
        out.append(
            Reading(
                "margin",
                pct is not None and pct < limits.min_margin_pct,
                f"margin today {pct}% is below {limits.min_margin_pct}%",
            )
        )
    if limits.min_runway_hours is not None and runway is not None:
        hours = runway.hours
        out.append(
            Reading(
                "runway",
                hours is not None and hours < limits.min_runway_hours,
                f"OpenRouter credits last {hours} h at the recent spend, under "
                f"{limits.min_runway_hours} h",
            )
        )
    if limits.max_discrepancy_pct is not None:
        worst, which = Decimal(0), ""
        for task in tasks:
            inline = task.data.get("inline_cost_usd")
            if task.state != "reconciled" or not inline or task.data.get("provisional"):
                continue
            inline_nusd = NanoUsd.from_usd(inline, Rounding.UP)
            if inline_nusd.value:
                gap = abs(
                    Decimal(task.data["cost_nusd"] - inline_nusd.value) * 100 / inline_nusd.value
                )
                if gap > worst:
                    worst, which = gap, task.id
        out.append(
            Reading(
                "discrepancy",
                worst > limits.max_discrepancy_pct,
                f"reconciled cost of {which} differs from its inline cost by "
                f"{worst:.1f}%, above {limits.max_discrepancy_pct}%",
            )
        )
    return out


def books(found: Sequence[Holding]) -> list[Reading]:
    """One reading per holding whose world is known: crossed while the books do not match it.
    Always on: a mismatch is money unaccounted for, not a preference."""
    return [
        Reading(f"books:{h.name}", h.matches is False, "books do not match: " + h.describe())
        for h in found
        if h.matches is not None
    ]


async def new_crossings(tx: KeysTx, current: list[Reading]) -> list[Reading]:
    """The readings that crossed since the last look; remembers the state for next time."""
    raw = await tx.get_value(STATE_KEY)
    before: dict[str, bool] = json.loads(raw) if raw else {}
    fired = [r for r in current if r.crossed and not before.get(r.key)]
    state = {**before, **{r.key: r.crossed for r in current}}
    await tx.set_value(STATE_KEY, json.dumps(state, sort_keys=True))
    return fired
