"""The paid-task engine: one method per use case, each a whole use case (the HTTP edge parses,
authenticates, makes one call here and renders what it gets back).

The parts, each one job (see docs/architecture.md for the map): :mod:`.routes` (where a
request goes), :mod:`.quotes` (what it may cost), :mod:`.intake` (new tasks),
:mod:`.payments` (invoices, credit, settlements), :mod:`.runner` (the call),
:mod:`.outcomes` (completed, failed and refunded), :mod:`.reconciler` (the real cost),
:mod:`.workers` (the background), :mod:`.states` (the one compare-and-set every move goes
through). They refuse in :class:`~.refusals.Refusal`, never in HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from typing import Any

from billing import budget, ledger
from billing.l402 import L402Authority
from billing.lightning import CreatedInvoice, InvoiceStatus, LightningBackend
from billing.money import Msat
from billing.payouts import Payouts
from billing.pricing import PricingPolicy
from billing.rates import Rate, RateProvider
from billing.store import PayoutRow, Store, TaskRow

from ..ecash.wallet import EcashWallet
from ..metrics import Metrics
from ..routing.breaker import Breakers
from ..routing.fallback import FallbackRunner
from ..routing.policy import PolicyHolder
from ..routing.privacy import PrivacyMode
from ..upstream.catalog import Catalog, CatalogCache
from ..upstream.openrouter import OpenRouterClient
from .callbacks import CallbackSender
from .cashu import Cashu, Change, Paid, token_hash
from .context import Context, EngineConfig, Hooks
from .intake import Created, Intake
from .l402 import Challenger, L402Payment
from .outcomes import Outcomes
from .payments import Payments
from .quotes import Priced, Quoter, quote_data
from .reconciler import Reconciler
from .record import record_of
from .refusals import Refusal
from .requests import ChatRequest
from .routes import Router
from .runner import Runner
from .states import TERMINAL, Hub, State
from .workers import Workers

__all__ = [
    "TERMINAL",
    "Chat",
    "Engine",
    "EngineConfig",
    "Hooks",
    "L402Payment",
    "Priced",
    "Refusal",
    "State",
    "quote_data",
]


@dataclass(frozen=True, slots=True)
class Chat:
    """A chat completion's outcome, for the edge to render."""

    task: TaskRow
    max_price_msat: int = 0
    tier: str | None = None
    task_class: str | None = None
    #: the completion (or a consensus's or cascade's answer); None if every model failed
    answer: dict[str, Any] | None = None
    #: a single call streamed: the events to send (each an SSE ``data``), until exhausted
    events: AsyncIterator[str] | None = None
    #: a repeat of a paid L402 request: ``task`` holds the answer, nothing ran
    replay: bool = False
    #: paid with a Cashu token: what it was (its mint's fee) and, once settled, the change
    cashu: Paid | None = None
    cashu_change: Change | None = None

    @property
    def failed(self) -> bool:
        return not self.replay and self.answer is None and self.events is None

    @property
    def error(self) -> str | None:
        error: str | None = record_of(self.task).error
        return error


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        lightning: LightningBackend,
        upstream: OpenRouterClient,
        catalog: CatalogCache,
        rates: RateProvider,
        policy: PricingPolicy,
        routing: PolicyHolder,
        config: EngineConfig | None = None,
        callbacks: CallbackSender | None = None,
        metrics: Metrics | None = None,
        runner: FallbackRunner | None = None,
        local_runner: FallbackRunner | None = None,
        privacy_mode: PrivacyMode | None = None,
        payouts: Payouts | None = None,
        l402: L402Authority | None = None,
        hooks: Hooks | None = None,
        ecash: EcashWallet | None = None,
    ) -> None:
        ctx = self._ctx = Context(
            store=store,
            lightning=lightning,
            upstream=upstream,
            catalog=catalog,
            rates=rates,
            policy=policy,
            config=config or EngineConfig(),
            routing=routing,
            runner=runner or FallbackRunner(upstream, Breakers()),
            local_runner=local_runner,
            privacy_mode=privacy_mode,
            payouts=payouts,
            l402=l402,
            callbacks=callbacks,
            metrics=metrics,
            hooks=hooks or Hooks(),
        )
        self._hub = Hub(ctx)
        self._quoter = Quoter(ctx, Router(ctx))
        self._payments = Payments(ctx, self._hub)
        self._intake = Intake(ctx, self._hub, self._quoter, self._payments)
        self._challenger = Challenger(ctx, self._quoter, self._payments)
        outcomes = Outcomes(ctx, self._hub)
        self._runner = Runner(ctx, outcomes)
        self._reconciler = Reconciler(ctx, self._hub)
        self._ecash = ecash
        self._cashu = Cashu(ctx, self._payments, ecash)
        self._workers = Workers(
            ctx, self._hub, self._payments, self._runner, outcomes, self._reconciler
        )

    def reconfigure(self, **changes: Any) -> None:
        """Test hook: replace parts of the engine's wiring (``config``, ``policy``,
        ``routing``, ``local_runner``, ``privacy_mode``...) for every part at once, as if the
        engine had been built with them. The application never calls it."""
        names = {f.name for f in fields(Context)}
        for name, value in changes.items():
            if name not in names:
                raise TypeError(f"the engine has no {name!r} to reconfigure")
            setattr(self._ctx, name, value)

    # -- what the edge and the operator read ------------------------------------------------

    @property
    def config(self) -> EngineConfig:
        return self._ctx.config

    @property
    def policy(self) -> PricingPolicy:
        return self._ctx.policy

    @property
    def routing(self) -> PolicyHolder:
        return self._ctx.routing

    @property
    def metrics(self) -> Metrics | None:
        return self._ctx.metrics

    @property
    def catalog(self) -> CatalogCache:
        return self._ctx.catalog

    @property
    def rates(self) -> RateProvider:
        return self._ctx.rates

    @property
    def lightning(self) -> LightningBackend:
        return self._ctx.lightning

    @property
    def store(self) -> Store:
        return self._ctx.store

    @property
    def ecash(self) -> EcashWallet | None:
        """The operator's Cashu wallet (None: ecash is not taken)."""
        return self._ecash

    # -- use cases ------------------------------------------------------------------------

    async def market(self) -> tuple[Catalog, Rate]:
        """The model catalog and the BTC/USD rate (refused while either is unknown)."""
        return await self._quoter.market()

    async def quote(self, request: ChatRequest) -> Priced:
        """What ``request`` may cost at most, and where it would go."""
        return await self._quoter.price(request)

    async def chat(
        self,
        payer: str | None,
        request: ChatRequest,
        *,
        stream: bool = False,
        l402: L402Payment | None = None,
        cashu: str | None = None,
    ) -> Chat:
        """A chat completion paid from ``payer``'s credit (an API key's account or a task
        token's), or by an L402 payment: priced, its maximum reserved, run, recorded. A
        request the L402 payment does not cover is refused with a fresh challenge."""
        if l402 is not None and l402.bound:
            async with self._ctx.store.read() as tx:
                task_id = await tx.get_value(l402.served)
                earlier = await tx.task(task_id) if task_id else None
            # A refunded run (every model failed) is no answer: the payment runs again.
            if earlier is not None and earlier.state != State.REFUNDED:
                return Chat(_same_scheme(earlier, l402), replay=True)
        priced = await self._quoter.price(request)
        paid: Paid | None = None
        if cashu is not None:
            task, paid = await self._cashu.pay(cashu, priced)
        elif l402 is None:
            assert payer is not None
            task = await self._payments.reserve(payer, priced, kind="prepaid")
        elif not l402.bound:
            try:
                task = await self._payments.reserve(l402.payer, priced, kind="l402")
            except Refusal as short:
                if short.kind != "insufficient_balance":
                    raise
                detail = "the token's credit does not cover this request"
                raise await self.challenge(
                    request,
                    l402.digest,
                    priced=priced,
                    refused=Refusal(short.kind, detail, extra=short.extra),
                ) from None
        else:
            if priced.quote.total > l402.max_price:
                # Prices, rates or routing (a budget's step-down) moved since the challenge:
                # running it now on what was paid would leave the difference to the operator.
                # The payment stays as credit on the token; the request gets a challenge at
                # today's price.
                detail = (
                    f"this request now costs up to {priced.quote.total.value} msat, more than "
                    f"the {l402.max_price.value} msat paid for it; that payment is credit on "
                    "the token"
                )
                raise await self.challenge(
                    request, l402.digest, priced=priced, refused=Refusal("price_changed", detail)
                )
            # The paid request runs once: its task is recorded in the transaction that
            # reserves it, so a concurrent repeat finds that task instead of running again.
            task_id = "task_" + secrets.token_hex(12)
            task = await self._payments.reserve(
                l402.payer,
                priced,
                kind="l402",
                task_id=task_id,
                extra={"paid_by": l402.scheme},
                remember=(l402.served, task_id),
                rerun_refunded=True,
            )
            if task.id != task_id:
                return Chat(_same_scheme(task, l402), replay=True)
        shown = functools.partial(
            Chat,
            max_price_msat=priced.quote.total.value,
            tier=priced.tier,
            task_class=priced.task_class.name if priced.task_class else None,
            cashu=paid,
        )
        several = record_of(task).several
        if stream and not several:
            events = await self._runner.stream(task)
            if events is None:
                async with self._ctx.store.read() as tx:
                    refunded = await tx.task(task.id)
                assert refunded is not None
                if paid is not None:  # refunded before it streamed: the token goes back whole
                    return shown(refunded, cashu_change=await self._cashu.change_or_later(task.id))
                return shown(refunded)
            return shown(task, events=events)
        ran = await self._runner.run(task)
        if paid is None:
            return shown(ran.task, answer=ran.answer)
        # Change is what the payer is owed once the call is settled: settle it now.
        settled = await self._settled(ran.task)
        change = await self._cashu.change_or_later(task.id)
        return shown(settled, answer=ran.answer, cashu_change=change)

    async def _settled(self, task: TaskRow) -> TaskRow:
        """``task`` reconciled now if it completed (else as it is: refunded, failed)."""
        if task.state == State.COMPLETED:
            await self._reconciler.reconcile(task)
        async with self._ctx.store.read() as tx:
            current = await tx.task(task.id)
        assert current is not None
        return current

    async def cashu_change(self, task_id: str | None, token: str) -> tuple[str, Change]:
        """The change of the request ``token`` paid for (``task_id``, when given, must be
        that request): only the token's holder may have it. Minted now if it was not yet (a
        lost response, a stream); refused while the call runs."""
        # A crash between the token's swap and its booking: resolved now, for its holder.
        await self._cashu.redeems.settled(token_hash(token))
        if task_id is None:
            task_id = await self._cashu.paid_by(token)
        await self._cashu.owner(task_id, token)
        async with self._ctx.store.read() as tx:
            task = await tx.task(task_id)
        if task is not None:
            task = await self._settled(task)
            if task.state not in TERMINAL:
                raise Refusal(
                    "cashu_change_not_ready",
                    f"the request is {task.state}; its change comes once it is settled",
                    retry_after=2,
                )
        return task_id, await self._cashu.change(task_id)

    async def cashu_account(self, token: str) -> str:
        """The prepaid account a Cashu token opens (or opened): its balance is the token."""
        return await self._cashu.open_account(token)

    async def challenge(
        self,
        request: ChatRequest,
        digest: str,
        *,
        priced: Priced | None = None,
        refused: Refusal | None = None,
    ) -> Refusal:
        """An L402 challenge for this request (see :meth:`.l402.Challenger.challenge`)."""
        return await self._challenger.challenge(request, digest, priced=priced, refused=refused)

    async def create_task(
        self,
        request: ChatRequest,
        *,
        payer: str | None,
        caller: str,
        callback_url: str | None,
        idempotency_key: str | None,
    ) -> Created:
        """A task for the task API (see :meth:`.intake.Intake.create_task`)."""
        return await self._intake.create_task(
            request,
            payer=payer,
            caller=caller,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
        )

    async def task(self, task_id: str) -> TaskRow | None:
        async with self._ctx.store.read() as tx:
            return await tx.task(task_id)

    async def open_account(self, account_id: str, key_hash: str) -> None:
        """A prepaid account, reached by the API key whose hash is ``key_hash``."""
        async with self._ctx.store.transaction() as tx:
            await tx.insert_api_account(account_id, key_hash, time.time())

    async def account(self, payer: str) -> tuple[Msat, list[dict[str, object]]]:
        """``payer``'s balance and where it stands against its budgets."""
        async with self._ctx.store.read() as tx:
            balance = await ledger.agent_balance(tx, payer)
            budgets = await budget.state(tx, self._ctx.config.budgets, payer, time.time())
        return balance, budgets

    async def balance(self, payer: str) -> Msat:
        async with self._ctx.store.read() as tx:
            return await ledger.agent_balance(tx, payer)

    async def deposit(self, payer: str, amount: Msat) -> CreatedInvoice:
        """An invoice whose payment becomes ``payer``'s credit."""
        return await self._payments.open(amount, "deposit", payer, f"satrouter deposit {payer}")

    async def withdraw(self, payer: str, bolt11: str, fee_limit: Msat | None) -> PayoutRow:
        """Pay ``payer``'s credit out to its own invoice (:mod:`billing.payouts`; refusals are
        its :class:`~billing.payouts.PayoutRefused`)."""
        return await self._payouts().withdraw(payer, bolt11, fee_limit)

    async def withdrawal(self, payment_hash: str) -> PayoutRow | None:
        return await self._payouts().get(payment_hash)

    def _payouts(self) -> Payouts:
        if self._ctx.payouts is None:
            raise Refusal("lightning_unavailable", "payouts are not running")
        return self._ctx.payouts

    @contextlib.contextmanager
    def listen(self, task_id: str) -> Iterator[Any]:
        """A queue of the task's state changes while the block runs (bounded: refused
        ``too_many_listeners`` past the limits)."""
        with self._hub.listen(task_id) as queue:
            yield queue

    async def confirm(self, payment_hash: str) -> bool:
        """Whether an invoice is paid, asking the backend now if no push said so yet."""
        return await self._payments.confirm(payment_hash)

    async def on_settled(self, status: InvoiceStatus) -> bool:
        """Apply one confirmed settlement (idempotent). True if it changed anything."""
        return await self._payments.on_settled(status)

    async def recover(self, *, starting: bool = False) -> int:
        """Refund the running tasks whose lease expired (``starting``: as at start-up)."""
        return await self._workers.recover(starting=starting)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Recover, then run the background workers until the block exits (and resolve the
        Cashu redeems a crash or a failure left open, meanwhile and every minute)."""
        async with self._workers.running():
            cashu = asyncio.create_task(self._cashu.redeems.sweep())
            try:
                yield
            finally:
                cashu.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cashu


def _same_scheme(earlier: TaskRow, paid: L402Payment) -> TaskRow:
    """The task a bound payment already ran: a repeat replays the answer. A preimage (L402,
    MPP) proves the payment, so it gets the answer whichever scheme ran it; an x402
    presentation names only the invoice, which is no secret, so it gets the answer only of a
    run it started (one payment is never taken as two)."""
    before = earlier.data.get("paid_by", "l402")
    if before != paid.scheme and paid.scheme == "x402":
        raise Refusal(
            "payment_already_used",
            f"this payment was already presented as {before} for this request; "
            f"repeat it that way to get the answer again",
            should_retry=False,
        )
    return earlier
