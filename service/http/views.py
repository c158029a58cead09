"""Turning stored tasks into API views."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing.store import TaskRow

from .schemas import InvoiceView, PriceBreakdown, TaskView


def price_view(quote: dict[str, Any]) -> PriceBreakdown:
    return PriceBreakdown(
        **{k: quote[k] for k in PriceBreakdown.model_fields if k in quote},
        cost_max_usd=str(Decimal(int(quote["cost_max_nusd"])) / 10**9),
    )


def task_view(task: TaskRow) -> TaskView:
    data = task.data
    invoice = data.get("invoice")
    return TaskView(
        id=task.id,
        status=task.state,
        created_at=task.created_at,
        updated_at=task.updated_at,
        model=data.get("model_used") or data.get("quote", {}).get("model"),
        price=price_view(data["quote"]) if "quote" in data else None,
        invoice=InvoiceView(**{k: invoice[k] for k in InvoiceView.model_fields})
        if invoice
        else None,
        result=data.get("result"),
        charge_msat=data.get("charge_msat"),
        change_msat=data.get("change_msat"),
        provisional=data.get("provisional"),
        consensus=data.get("consensus"),
        cascade=data.get("cascade"),
        tier=data.get("tier"),
        task_class=data.get("task_class"),
        error=data.get("error"),
    )
