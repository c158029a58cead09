"""Turning the engine's answers (stored tasks, prices, the catalog) into API views: the REST
handlers and the MCP tools show the same."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing.money import NanoUsd, Rounding, nusd_to_msat
from billing.rates import Rate
from billing.store import TaskRow

from ..tasks.engine import Priced, quote_data
from ..tasks.record import record_of
from ..upstream.catalog import Catalog
from .schemas import InvoiceView, ModelList, ModelView, PriceBreakdown, QuoteView, TaskView


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


def quote_view(priced: Priced) -> QuoteView:
    """A quote as agents see it: the price, and where the request would be routed."""
    return QuoteView(
        **price_view(quote_data(priced.quote)).model_dump(),
        tier=priced.tier,
        task_class=priced.task_class.name if priced.task_class else None,
    )


def model_list(catalog: Catalog, rate: Rate) -> ModelList:
    """The catalog with prices in msat at ``rate`` (rounded up: never under the cost)."""

    def per_mtok(price: object) -> int:
        usd = NanoUsd.from_usd(price * 1_000_000, Rounding.UP)  # type: ignore[operator]
        return nusd_to_msat(usd, rate.usd_per_btc, Rounding.UP).value

    models = [
        ModelView(
            id=info.id,
            name=info.name,
            context_length=info.context_length,
            max_completion_tokens=info.max_completion_tokens,
            prompt_msat_per_mtok=per_mtok(info.price.prompt) if info.price else None,
            completion_msat_per_mtok=per_mtok(info.price.completion) if info.price else None,
            request_msat=per_mtok(info.price.request / 1_000_000) if info.price else None,
            variable_price=info.price is None,
        )
        for info in catalog
    ]
    return ModelList(
        data=models,
        btc_usd=str(rate.usd_per_btc),
        rate_source=rate.source,
        catalog_age_s=round(catalog.age()),
    )
