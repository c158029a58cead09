"""What a call came to: completed (kept for the reconciler), failed and refunded in full, or
finished after its task was refunded (its cost booked as the operator's); and the audit entry
of every model call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

from billing import audit, ledger
from billing.money import Msat, NanoUsd, Rounding
from billing.store import TaskRow, Tx

from ..routing.fallback import Attempt
from ..upstream.openrouter import ChatResult
from ..upstream.schemas import Usage, plain
from . import budgets
from .context import Context
from .reconciler import call_cost, ran_free
from .record import record_of
from .states import TERMINAL, Hub, State, move

log = logging.getLogger(__name__)


def byok_of(usage: Usage | None) -> str | None:
    """The provider's own cost of a call run on the operator's provider key (BYOK), which
    ``usage.cost`` (OpenRouter's fee alone) leaves out."""
    cost = usage.byok_cost if usage else None
    return str(cost) if cost is not None else None


def call_record(result: ChatResult) -> dict[str, Any]:
    """What reconciliation needs of one call of a task that makes several."""
    usage = result.usage
    return {
        "model": result.completion.model,
        "generation_id": result.generation_id,
        "inline_cost_usd": str(usage.cost) if usage and usage.cost is not None else None,
        "inline_byok_usd": byok_of(usage),
    }


class Outcomes:
    def __init__(self, ctx: Context, hub: Hub) -> None:
        self._ctx = ctx
        self._hub = hub
        self._background: set[asyncio.Task[None]] = set()

    def background(self, job: Coroutine[Any, Any, None] | asyncio.Task[None]) -> None:
        """Keep a reference to work that runs on its own until it is done."""
        task = job if isinstance(job, asyncio.Task) else asyncio.create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def complete(
        self,
        task: TaskRow,
        result: ChatResult | None,
        *,
        usage: Usage | None = None,
        model: str | None = None,
        generation_id: str | None = None,
        upstream_seconds: float | None = None,
        attempts: list[Attempt] | None = None,
        extra: dict[str, Any] | None = None,
        answer: dict[str, Any] | None = None,
    ) -> TaskRow:
        """Record the call's result (``answer``: what the caller gets, when it is more than the
        completion); the reconciler takes it from here."""
        usage = usage or (result.usage if result else None)
        if answer is None and result is not None:
            answer = plain(result.raw)
        updates: dict[str, Any] = {
            # A prepaid caller already has its answer; tasks and L402 replays need it kept.
            "result": answer if record_of(task).kind != "prepaid" else None,
            "generation_id": generation_id or (result.generation_id if result else None),
            "model_used": model or (result.completion.model if result else None),
            "inline_cost_usd": str(usage.cost) if usage and usage.cost is not None else None,
            "inline_byok_usd": byok_of(usage),
            "usage": usage.model_dump(mode="json") if usage else None,
            "completed_at": time.time(),
            "upstream_seconds": upstream_seconds,
            "attempts": [a.as_dict() for a in attempts or []],
            **(extra or {}),
        }
        async with self._ctx.store.transaction() as tx:
            current = await tx.task(task.id)
            assert current is not None
            if current.state != State.RUNNING:  # refunded meanwhile: see _unbilled
                await self.audit_call(
                    tx, task, "completed_after_refund", result=result, usage=usage
                )
                moved = None
            else:
                moved = await move(
                    tx,
                    current,
                    State.COMPLETED,
                    updates=updates,
                    event_fields={"model": updates["model_used"]},
                )
                await self.audit_call(
                    tx, task, "completed", result=result, usage=usage, model=updates["model_used"]
                )
        if moved is None:
            self.background(self._unbilled(current, updates))
            return current
        self._hub.announce(moved)
        return moved

    async def _unbilled(self, task: TaskRow, call: dict[str, Any]) -> None:
        """A call that finished after its task was refunded (another process recovered it as
        interrupted): the agent keeps its refund, and what OpenRouter billed for the call is
        booked as the operator's cost, so the credits in the books still follow the world."""
        record = record_of(task)
        if call.get("ran_locally") or ran_free(record):
            return
        quoted_max = Decimal(record.quote.cost_max.value) / 10**9
        cost_usd, byok_usd, _ = await call_cost(
            self._ctx,
            task.id,
            call.get("generation_id"),
            call.get("inline_cost_usd"),
            call.get("inline_byok_usd"),
            quoted_max,
        )
        cost = NanoUsd.from_usd(cost_usd, Rounding.UP)
        byok = NanoUsd.from_usd(byok_usd, Rounding.UP)
        if cost.value or byok.value:
            async with self._ctx.store.transaction() as tx:
                await ledger.post(tx, ledger.unbilled_call(task.id, cost, byok=byok))
        log.warning("%s ran after it was refunded; its cost %s is the operator's", task.id, cost)

    async def fail(
        self,
        task: TaskRow,
        error: str,
        *,
        attempts: list[Attempt] | None = None,
        only_from: State | None = None,
    ) -> TaskRow:
        """Every model failed (or the run was interrupted): refund everything held. With
        ``only_from``, only a task still in that state (a call its replica completed after
        all is reconciled, not refunded)."""
        async with self._ctx.store.transaction() as tx:
            current = await tx.task(task.id)
            assert current is not None
            if current.state in TERMINAL or (only_from and current.state != only_from):
                return current
            failed = await move(
                tx,
                current,
                State.FAILED,
                updates={"error": error, "attempts": [a.as_dict() for a in attempts or []]},
            )
            assert failed is not None
            await self.audit_call(tx, task, "failed", error=error)
            record = record_of(failed)
            held = Msat(record.held_msat or 0)
            if held:
                await ledger.post(tx, ledger.refund(task.id, record.payer, held))
            await budgets.correct(tx, self._ctx.config.budgets, task, Msat(0), NanoUsd(0))
            refunded = await move(
                tx, failed, State.REFUNDED, event_fields={"refund_msat": held.value}
            )
        assert refunded is not None
        self._hub.announce(refunded)
        return refunded

    async def audit_call(
        self,
        tx: Tx,
        task: TaskRow,
        outcome: str,
        *,
        result: ChatResult | None = None,
        usage: Usage | None = None,
        model: str | None = None,
        error: str | None = None,
    ) -> None:
        """One audit entry per model call: who, what ran, tokens, outcome (no text unless
        the operator turned that on)."""
        record = record_of(task)
        data: dict[str, Any] = {
            "task": task.id,
            "agent": record.payer,
            "model": model or record.request.get("model"),
            "provider": result.completion.provider if result else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "inline_cost_usd": str(usage.cost) if usage and usage.cost is not None else None,
            "privacy": record.privacy if "privacy" in task.data else "not classified",
            "outcome": outcome,
            "error": error,
        }
        if self._ctx.config.audit_content:
            data["messages"] = record.request.get("messages")
            data["completion"] = result.completion.text if result else None
        await audit.append(tx, "model_call", data, time.time())
