"""Money in: an invoice for any purpose (a task, an L402 challenge, a deposit), a call paid from
credit (``reserve``), and settlements applied once each (pushed, asked for, or re-checked).

Who pays: a task paid by invoice is paid by ``task_<id>`` (change and refunds become credit the
task token can withdraw); a prepaid call by its account ``acct_<id>``; an L402 call by its token
``l402_<token id>``. Money moves only through :mod:`billing.ledger`."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from billing import budget, ledger
from billing.budget import BudgetExceeded
from billing.lightning import CreatedInvoice, InvoiceStatus, LightningError
from billing.money import Msat
from billing.store import InvoiceRow, TaskRow

from .. import logs
from . import budgets, idempotency
from .context import Context
from .quotes import Priced, quote_data
from .record import record_of
from .refusals import Refusal
from .states import Hub, State, insert, move

log = logging.getLogger(__name__)
#: How many open invoices a reconnect re-checks at most.
RECHECK_MAX = 10_000


class Payments:
    def __init__(self, ctx: Context, hub: Hub) -> None:
        self._ctx = ctx
        self._hub = hub

    async def invoice(self, amount: Msat, memo: str) -> CreatedInvoice:
        """A new invoice from the Lightning backend; refused while the backend is down."""
        try:
            return await self._ctx.lightning.create_invoice(
                amount, memo, self._ctx.config.invoice_expiry
            )
        except (LightningError, OSError) as exc:
            raise Refusal("lightning_unavailable", str(exc) or type(exc).__name__) from None

    @staticmethod
    def row(invoice: CreatedInvoice, purpose: str, ref: str, now: float) -> InvoiceRow:
        """The record of ``invoice``, open, paying for ``purpose`` (task, l402, deposit)."""
        return InvoiceRow(
            invoice.payment_hash,
            invoice.bolt11,
            invoice.amount.value,
            purpose,
            ref,
            "open",
            now,
            invoice.expires_at,
        )

    async def open(self, amount: Msat, purpose: str, ref: str, memo: str) -> CreatedInvoice:
        """An invoice recorded for ``purpose`` (``l402`` or ``deposit``) paying into ``ref``."""
        invoice = await self.invoice(amount, memo)
        async with self._ctx.store.transaction() as tx:
            await tx.insert_invoice(self.row(invoice, purpose, ref, time.time()))
        return invoice

    async def reserve(
        self,
        payer: str,
        priced: Priced,
        *,
        kind: str,
        task_id: str | None = None,
        extra: dict[str, Any] | None = None,
        remember: tuple[str, str] | None = None,
        rerun_refunded: bool = False,
    ) -> TaskRow:
        """A call paid from ``payer``'s credit: its maximum price moves into escrow now. A chat
        completion runs at once (``running``); a task (kind ``account``) is ``paid`` and waits
        for a worker. With ``remember`` (a key and its entry) a key already taken returns the
        task it stands for and reserves nothing; with ``rerun_refunded`` a key whose task was
        refunded is taken over (the refund is the credit reserved again)."""
        ctx = self._ctx
        task_id = task_id or "task_" + secrets.token_hex(12)
        now = time.time()
        state = State.PAID if kind == "account" else State.RUNNING
        total, cost_max = priced.quote.total, priced.quote.cost_max
        data = {
            "kind": kind,
            "payer": payer,
            "request": priced.body,
            "quote": quote_data(priced.quote),
            "held_msat": total.value,
            "budget": budgets.counted(total, cost_max, now),
            **({"paid_at": now} if state == State.PAID else {}),
            **(extra or {}),
            **priced.decision.record(),
        }
        task = TaskRow(task_id, state, payer, data, now, now)
        logs.task_id.set(task_id)
        try:
            async with ctx.store.transaction() as tx:
                earlier = await idempotency.taken(tx, remember[0]) if remember else None
                if earlier and not (rerun_refunded and earlier.state == State.REFUNDED):
                    return earlier
                task = await insert(tx, task, lease=ctx.config.lease)
                await budget.commit(tx, ctx.config.budgets, payer, total, cost_max, now)
                await ledger.post(tx, ledger.reserve(payer, task_id, total))
                if remember:
                    await tx.set_value(*remember)
        except BudgetExceeded as exc:
            raise budgets.over_budget(ctx.config.budgets, exc) from None
        except ledger.InsufficientFunds as exc:
            raise Refusal(
                "insufficient_balance",
                f"this request may cost up to {total.value} msat; the balance is "
                f"{exc.balance} msat",
                extra={"price_msat": total.value, "balance_msat": exc.balance},
                should_retry=False,
            ) from None
        return task

    async def open_invoice_hashes(self) -> list[str]:
        """The invoices a reconnect re-checks: open and not yet expired (an expired one is
        confirmed once more when the sweep expires it). Bounded, like everything unpaid, by
        the invoice rate limits times the expiry."""
        async with self._ctx.store.read() as tx:
            return [i.payment_hash for i in await tx.open_invoices(time.time(), RECHECK_MAX)]

    async def on_settled(self, status: InvoiceStatus) -> bool:
        """Apply one confirmed settlement (idempotent). True if it changed anything."""
        if not status.settled:
            return False
        ctx = self._ctx
        moved: TaskRow | None = None
        async with ctx.store.transaction() as tx:
            invoice = await tx.invoice(status.payment_hash)
            if invoice is None or invoice.status not in ("open", "expired"):
                return False
            if status.amount_paid < Msat(invoice.amount_msat):
                log.warning(
                    "invoice %s underpaid: %s", invoice.payment_hash[:16], status.amount_paid
                )
                return False
            await tx.set_invoice_status(invoice.payment_hash, "settled", time.time())
            paid, ref = status.amount_paid, invoice.ref
            if invoice.purpose != "task":  # deposit to an account, or an L402 token's payment
                await ledger.post(tx, ledger.deposit(ref, paid, invoice.payment_hash))
            else:
                task = await tx.task(ref)
                await ledger.post(
                    tx, ledger.invoice_paid_into_escrow(ref, paid, invoice.payment_hash)
                )
                if task is None or task.state != State.AWAITING_PAYMENT:
                    # paid after it expired: the money is the payer's credit
                    await ledger.post(tx, ledger.refund(ref, ref, paid))
                else:
                    now = time.time()
                    quoted = record_of(task).quote
                    try:
                        await budget.commit(
                            tx, ctx.config.budgets, ref, quoted.total, quoted.cost_max, now
                        )
                    except BudgetExceeded as exc:  # paid, but over a cap: refund in full
                        await ledger.post(tx, ledger.refund(ref, ref, paid))
                        failed = await move(
                            tx,
                            task,
                            State.FAILED,
                            updates={"held_msat": paid.value, "error": f"budget: {exc.detail}"},
                        )
                        assert failed is not None
                        moved = await move(
                            tx, failed, State.REFUNDED, event_fields={"refund_msat": paid.value}
                        )
                    else:
                        moved = await move(
                            tx,
                            task,
                            State.PAID,
                            updates={
                                "held_msat": paid.value,
                                "paid_at": now,
                                "budget": budgets.counted(quoted.total, quoted.cost_max, now),
                            },
                        )
        if moved is not None:
            self._hub.announce(moved)
        return True

    async def confirm(self, payment_hash: str) -> bool:
        """Ask the backend now (used when a client says it paid before the push arrived)."""
        async with self._ctx.store.read() as tx:
            invoice = await tx.invoice(payment_hash)
        if invoice is None:
            return False
        if invoice.status == "settled":
            return True
        try:
            status = await self._ctx.lightning.invoice_status(payment_hash)
        except LightningError:
            return False
        await self.on_settled(status)
        return status.settled
