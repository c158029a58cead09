"""Settling a completed task from OpenRouter's authoritative cost: the charge, the change
back to the payer, the margin, the budgets corrected to what was really spent."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from billing import ledger
from billing.money import Msat, NanoUsd, Rounding, nusd_to_msat
from billing.pricing import charge
from billing.store import TaskRow

from ..upstream.errors import UpstreamError
from ..upstream.openrouter import GenerationNotReady
from . import budgets
from .context import Context
from .record import TaskRecord, record_of
from .states import Hub, State, move

log = logging.getLogger(__name__)


def ran_free(record: TaskRecord) -> bool:
    """Local models cost nothing upstream."""
    return record.ran_locally or record.decision.local


async def call_cost(
    ctx: Context,
    task_id: str,
    generation_id: str | None,
    inline: str | None,
    inline_byok: str | None,
    quoted_max: Decimal,
) -> tuple[Decimal, Decimal, bool]:
    """One call's cost in dollars, split into what OpenRouter's credits paid and what the
    operator's own provider key paid (BYOK: ``usage.cost`` and ``/generation``'s
    ``total_cost`` are then only OpenRouter's fee, the provider's cost is
    ``upstream_inference_cost``), and whether it is provisional: OpenRouter's record when
    it appears in time, else the inline cost, else (neither) the quoted maximum."""
    byok = Decimal(inline_byok) if inline_byok is not None else Decimal(0)
    if not generation_id:
        return (Decimal(inline) if inline is not None else Decimal(0)), byok, False
    try:
        generation = await ctx.upstream.generation(
            generation_id, deadline=ctx.config.generation_deadline
        )
        return generation.total_cost, generation.byok_cost, False
    except GenerationNotReady:
        pass
    except UpstreamError as exc:
        log.warning("%s: generation lookup failed: %r", task_id, exc)
    if inline is None:
        return quoted_max, Decimal(0), True
    return Decimal(inline), byok, True


class Reconciler:
    def __init__(self, ctx: Context, hub: Hub) -> None:
        self._ctx = ctx
        self._hub = hub

    async def reconcile(self, task: TaskRow) -> TaskRow | None:
        """Settle a completed task from OpenRouter's authoritative cost."""
        ctx = self._ctx
        record = record_of(task)
        quoted = record.quote
        quoted_max = Decimal(quoted.cost_max.value) / 10**9
        byok_usd = Decimal(0)
        if ran_free(record):
            cost_usd, provisional = Decimal(0), False
        elif calls := record.calls:  # consensus and cascade: every call's own cost
            parts = await asyncio.gather(
                *(
                    call_cost(
                        ctx,
                        task.id,
                        c["generation_id"],
                        c["inline_cost_usd"],
                        c.get("inline_byok_usd"),
                        quoted_max / len(calls),
                    )
                    for c in calls
                )
            )
            cost_usd = sum((c for c, _, _ in parts), Decimal(0))
            byok_usd = sum((b for _, b, _ in parts), Decimal(0))
            provisional = any(p for _, _, p in parts)
        else:
            cost_usd, byok_usd, provisional = await call_cost(
                ctx,
                task.id,
                record.generation_id,
                record.inline_cost_usd,
                record.inline_byok_usd,
                quoted_max,
            )
        credits = NanoUsd.from_usd(cost_usd, Rounding.UP)
        byok = NanoUsd.from_usd(byok_usd, Rounding.UP)
        cost = credits + byok
        rate = quoted.rate
        held = Msat(record.held_msat or 0)
        bill = charge(cost, paid=held, rate=rate, policy=ctx.policy)
        margin = bill.total - nusd_to_msat(cost, rate.usd_per_btc, Rounding.UP)
        updates = {
            "cost_nusd": cost.value,
            "byok_cost_nusd": byok.value,
            "charge_msat": bill.total.value,
            "change_msat": bill.change.value,
            "margin_msat": margin.value,
            "provisional": provisional,
            "capped": bill.capped,
            "reconciled_at": time.time(),
        }
        async with ctx.store.transaction() as tx:
            current = await tx.task(task.id)
            if current is None or current.state != State.COMPLETED:
                return None
            await ledger.post(
                tx,
                ledger.settle(task.id, record.payer, held, bill.total, credits, byok=byok),
            )
            await budgets.correct(tx, ctx.config.budgets, task, bill.total, cost)
            moved = await move(
                tx,
                current,
                State.RECONCILED,
                updates=updates,
                event_fields={"charge_msat": bill.total.value, "change_msat": bill.change.value},
            )
        if moved is not None:
            self._hub.announce(moved)
            log.info(
                "%s reconciled",
                task.id,
                extra={
                    "status": str(State.RECONCILED),
                    "cost_nusd": cost.value,
                    "charge_msat": bill.total.value,
                    "change_msat": bill.change.value,
                },
            )
            if ctx.metrics is not None:
                model_used = str(record.model_used or quoted.model)
                ctx.metrics.revenue_msat.labels(model_used).inc(bill.total.value)
                ctx.metrics.cost_nusd.labels(model_used).inc(cost.value)
                ctx.metrics.margin_msat.labels(model_used).inc(margin.value)
                completed_at = record.completed_at
                if completed_at:
                    ctx.metrics.reconciliation_lag.observe(time.time() - completed_at)
        return moved
