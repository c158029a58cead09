"""Turning stored tasks into API views."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing.store import TaskRow

from ..tasks.record import record_of
from .schemas import InvoiceView, PriceBreakdown, TaskView


def price_view(quote: dict[str, Any]) -> PriceBreakdown:
    return PriceBreakdown(
        **{k: quote[k] for k in PriceBreakdown.model_fields if k in quote},
        cost_max_usd=str(Decimal(int(quote["cost_max_nusd"])) / 10**9),
    )


def task_view(task: TaskRow) -> TaskView:
    record = record_of(task)
    invoice = record.invoice
    return TaskView(
        id=task.id,
        status=task.state,
        created_at=task.created_at,
        updated_at=task.updated_at,
        model=record.model_used or record.quote.model,
        price=price_view(record.quote.dump()),
        invoice=InvoiceView(**{k: invoice[k] for k in InvoiceView.model_fields})
        if invoice
        else None,
        result=record.result,
        charge_msat=record.charge_msat,
        change_msat=record.change_msat,
        provisional=record.provisional,
        consensus=record.consensus,
        cascade=record.cascade,
        tier=record.tier,
        task_class=record.task_class,
        error=record.error,
    )
