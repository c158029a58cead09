"""Revenue, cost and margin: per model, agent, task class, tier, day or hour.

Read from the tasks the engine reconciled (each holds its revenue in msat, its OpenRouter cost
in nano-USD and the BTC/USD rate of its quote) and counted with the failed and refunded ones.
Cost in msat is the nano-USD cost at each task's own rate, rounded up (the operator's side).
Amounts reconciled from the inline ``usage.cost`` because ``/generation`` never answered are
*provisional* and reported apart from the final ones.

Of a task's stored record (any version; ``service/tasks/record.py`` keeps these names) only
this subset is read: ``charge_msat``, ``cost_nusd``, ``quote.btc_usd``, ``quote.model``,
``model_used``, ``payer``, ``task_class``, ``tier``, ``provisional``, ``reconciled_at``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from .money import Msat, NanoUsd, Rounding, nusd_to_msat
from .store import TaskRow

GroupBy = Literal["model", "agent", "class", "tier", "day", "hour", "total"]
GROUPS: tuple[str, ...] = ("model", "agent", "class", "tier", "day", "hour", "total")


@dataclass(slots=True)
class MarginRow:
    """One group's figures. Amounts are integers: msat, or nano-USD where named."""

    group: str
    tasks: int = 0
    revenue_msat: int = 0
    cost_nusd: int = 0
    cost_msat: int = 0
    margin_msat: int = 0
    failed: int = 0
    refunded: int = 0
    provisional_tasks: int = 0
    provisional_revenue_msat: int = 0
    provisional_cost_nusd: int = 0
    models: set[str] = field(default_factory=set)

    @property
    def margin_pct(self) -> Decimal | None:
        """Margin as a percentage of revenue, two decimals; None without revenue."""
        if not self.revenue_msat:
            return None
        return (Decimal(self.margin_msat) * 100 / Decimal(self.revenue_msat)).quantize(
            Decimal("0.01")
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("models")
        pct = self.margin_pct
        data["margin_pct"] = str(pct) if pct is not None else None
        return data


def _key(task: TaskRow, group_by: str) -> str:
    data = task.data
    when = datetime.fromtimestamp(data.get("reconciled_at") or task.updated_at, UTC)
    match group_by:
        case "model":
            return str(data.get("model_used") or data.get("quote", {}).get("model") or "-")
        case "agent":
            return str(data.get("payer") or task.agent or "-")
        case "class":
            return str(data.get("task_class") or "unclassified")
        case "tier":
            return str(data.get("tier") or "none")
        case "day":
            return when.strftime("%Y-%m-%d")
        case "hour":
            return when.strftime("%Y-%m-%dT%H:00Z")
    return "total"


def margins(tasks: Iterable[TaskRow], group_by: str = "model") -> list[MarginRow]:
    """Aggregate tasks into rows, largest revenue first."""
    if group_by not in GROUPS:
        raise ValueError(f"group by one of {', '.join(GROUPS)}")
    rows: dict[str, MarginRow] = {}
    for task in tasks:
        if task.state not in ("reconciled", "failed", "refunded"):
            continue
        row = rows.setdefault(_key(task, group_by), MarginRow(_key(task, group_by)))
        data = task.data
        if task.state != "reconciled":
            row.failed += 1
            row.refunded += task.state == "refunded"
            continue
        revenue = int(data["charge_msat"])
        cost = NanoUsd(int(data["cost_nusd"]))
        rate = Decimal(data["quote"]["btc_usd"])
        cost_msat = nusd_to_msat(cost, rate, Rounding.UP)
        row.tasks += 1
        if data.get("provisional"):
            row.provisional_tasks += 1
            row.provisional_revenue_msat += revenue
            row.provisional_cost_nusd += cost.value
            continue
        row.revenue_msat += revenue
        row.cost_nusd += cost.value
        row.cost_msat += cost_msat.value
        row.margin_msat += (Msat(revenue) - cost_msat).value
    return sorted(rows.values(), key=lambda r: (-r.revenue_msat, r.group))


def parse_since(text: str | None, *, now: float | None = None) -> float | None:
    """``2026-11-20``, an ISO time, or a relative ``24h`` / ``7d`` / ``30m``."""
    if not text:
        return None
    now = time.time() if now is None else now
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return now - int(text[:-1]) * units[text[-1]]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use 2026-11-20, an ISO time, or 24h/7d)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


COLUMNS = (
    "group",
    "tasks",
    "revenue_msat",
    "cost_nusd",
    "cost_msat",
    "margin_msat",
    "margin_pct",
    "failed",
    "refunded",
    "provisional_tasks",
    "provisional_revenue_msat",
    "provisional_cost_nusd",
)


def to_csv(rows: Iterable[MarginRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v for k, v in row.as_dict().items() if k in COLUMNS})
    return out.getvalue()


def to_table(rows: list[MarginRow], group_by: str) -> str:
    """A readable terminal table (sats and dollars for people; exact integers elsewhere)."""
    header = (
        group_by,
        "tasks",
        "revenue sat",
        "cost USD",
        "margin sat",
        "margin %",
        "failed",
        "provisional",
    )
    lines = [header]
    for r in rows:
        pct = r.margin_pct
        lines.append(
            (
                r.group,
                str(r.tasks),
                f"{r.revenue_msat / 1000:,.3f}",
                f"{NanoUsd(r.cost_nusd).to_usd():.6f}",
                f"{r.margin_msat / 1000:,.3f}",
                f"{pct}" if pct is not None else "-",
                str(r.failed),
                str(r.provisional_tasks) if r.provisional_tasks else "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        text.append("  ".join(cells).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)
