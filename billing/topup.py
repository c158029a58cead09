"""Topping up OpenRouter credits from earnings.

OpenRouter sells no credits over Lightning or by API, so the decision (when, how much, from which
money) and the accounting are satrouter's, and the purchase goes through an executor:

- ``manual``: tell the operator the amount and wait for the credits to rise (the operator pays
  from outside; the credits are booked as the owner's money);
- ``command``: run the operator's program with the amount; it prints a BOLT11 invoice (from an
  exchange or a card-funding service) that satrouter pays from its wallet;
- ``lightning-invoice``: GET a configured URL for a BOLT11 invoice and pay it.

A top-up is a state machine, each step a compare-and-set committed with its ledger entry:

    planned -> executing -> paid -> confirmed -> reconciled        (manual: planned ->
    awaiting_operator -> confirmed -> reconciled); exits failed (nothing paid) and expired
    (paid, credits never showed up: written off, the operator is told).

Never twice: a top-up is planned only when none is open; the invoice and its payment hash are
stored before paying, so after a crash the payment's status is asked for instead of paying
again (and Lightning itself refuses to pay one invoice twice). Never agent money: the sats are
capped by the realised margin not yet spent on top-ups *and* by what the wallet holds beyond
everything owed to agents (balances and escrow).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import ledger
from .lightning import InvalidInvoice, LightningBackend, LightningError, PaymentState
from .lightning.bolt11 import decode_invoice
from .money import Msat, NanoUsd, Rounding, nusd_to_msat
from .rates import RateProvider, RateUnavailable
from .runway import runway
from .store import Store, TopupRow, Tx
from .topup_executors import (
    CommandExecutor,
    Executor,
    InvoiceUrlExecutor,
    ManualExecutor,
    TopupError,
)

__all__ = [
    "OPEN",
    "SPENT",
    "CommandExecutor",
    "Credits",
    "Executor",
    "InvoiceUrlExecutor",
    "ManualExecutor",
    "State",
    "TopupController",
    "TopupError",
    "TopupPolicy",
]

log = logging.getLogger(__name__)


class State(enum.StrEnum):
    PLANNED = "planned"
    AWAITING_OPERATOR = "awaiting_operator"
    EXECUTING = "executing"
    PAID = "paid"
    CONFIRMED = "confirmed"
    RECONCILED = "reconciled"
    FAILED = "failed"
    EXPIRED = "expired"


#: A payment the backend still has no record of this long after it was handed over was never
#: taken (sooner would race a pay call still on its way).
ABSENT_AFTER = 120.0

OPEN = (State.PLANNED, State.AWAITING_OPERATOR, State.EXECUTING, State.PAID, State.CONFIRMED)
SPENT = (State.EXECUTING, State.PAID, State.CONFIRMED, State.RECONCILED, State.EXPIRED)


@dataclass(frozen=True, slots=True)
class Credits:
    total: NanoUsd  # everything ever bought
    used: NanoUsd

    @property
    def balance(self) -> NanoUsd:
        return self.total - self.used


@dataclass(frozen=True, slots=True)
class TopupPolicy:
    floor: NanoUsd  # plan a top-up when the balance falls below this
    target_runway_hours: Decimal = Decimal(72)
    daily_cap: NanoUsd | None = None
    monthly_cap: NanoUsd | None = None
    minimum: NanoUsd = NanoUsd(1_000_000_000)  # noqa: RUF009 (immutable value)
    purchase_fee_ppm: int = 50_000  # sats are sized for the dollars plus this fee (5 %)
    fee_limit_ppm: int = 10_000  # Lightning routing fee limit (1 %)
    received_at_least_ppm: int = 900_000  # a rise of 90 % of the dollars confirms it
    confirm_within: float = 86_400.0


def _start_of(now: float, *, month: bool) -> float:
    when = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (when.replace(day=1) if month else when).timestamp()


class TopupController:
    def __init__(
        self,
        *,
        store: Store,
        lightning: LightningBackend,
        credits: Callable[[], Awaitable[Credits]],
        rates: RateProvider,
        policy: TopupPolicy,
        executor: Executor,
        notify: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._lightning = lightning
        self._credits = credits
        self._rates = rates
        self.policy = policy
        self._executor = executor
        self._notify = notify

    # -- money available -------------------------------------------------------------------

    @staticmethod
    async def spendable(tx: Tx) -> Msat:
        """What a top-up may spend: the realised margin not yet spent on top-ups, and never
        more than the wallet holds beyond everything owed to agents."""
        reconciled = await tx.tasks_updated_between(None, None, ("reconciled",))
        margin = sum(
            int(t.data.get("margin_msat", 0)) for t in reconciled if not t.data.get("provisional")
        )
        spent = sum(
            t.amount_msat + int(t.data.get("fee_msat", 0))
            for t in await tx.topups(SPENT)
            if t.data["executor"] != "manual"
        )
        wallet = await ledger.balance(tx, ledger.LIGHTNING)
        # Sats owed to agents (balances and escrow); the BYOK payable is in dollars.
        owed = sum(-a.balance for a in await tx.accounts("liabilities:") if a.currency == "msat")
        return Msat(max(0, min(margin - spent, wallet - owed)))

    # -- planning ---------------------------------------------------------------------------

    async def plan(self, now: float | None = None) -> TopupRow | None:
        """A new top-up when the balance is under the floor and none is open."""
        now = time.time() if now is None else now
        async with self._store.read() as tx:
            if await tx.topups(OPEN):
                return None
        credits = await self._credits()
        balance = credits.balance
        if balance >= self.policy.floor:
            return None
        left = await runway(self._store, balance, now=now)
        wanted = (
            max(left.spend_per_hour * int(self.policy.target_runway_hours), self.policy.floor * 2)
            - balance
        )
        wanted = max(wanted, self.policy.minimum)
        async with self._store.read() as tx:
            for cap, month in ((self.policy.daily_cap, False), (self.policy.monthly_cap, True)):
                if cap is None:
                    continue
                bought = sum(
                    t.usd_nusd
                    for t in await tx.topups(since=_start_of(now, month=month))
                    if t.state != State.FAILED
                )
                wanted = min(wanted, cap - NanoUsd(bought))
        try:
            rate = await self._rates.current()
        except RateUnavailable as exc:
            log.warning("no top-up: %s", exc)
            return None
        manual = self._executor.name == "manual"
        sats = self._sats_for(wanted, rate.usd_per_btc)
        if not manual:
            async with self._store.read() as tx:
                spendable = await self.spendable(tx)
            if self._with_fee_limit(sats) > spendable:  # buy what the earnings allow
                budget = Msat(
                    spendable.value * 1_000_000 // (1_000_000 + self.policy.fee_limit_ppm)
                )
                wanted = self._usd_for(budget, rate.usd_per_btc)
                sats = self._sats_for(wanted, rate.usd_per_btc)
                one_sat = self._usd_for(Msat(1000), rate.usd_per_btc) + NanoUsd(1)
                while self._with_fee_limit(sats) > spendable and wanted > NanoUsd(0):
                    wanted = wanted - one_sat  # rounding up to whole sats must not overshoot
                    sats = self._sats_for(wanted, rate.usd_per_btc)
        if wanted < self.policy.minimum or sats.value <= 0:
            log.info("no top-up: %s is under the minimum (caps or earnings)", wanted)
            return None
        topup = TopupRow(
            "topup_" + secrets.token_hex(8),
            State.PLANNED,
            0 if manual else sats.value,
            wanted.value,
            {
                "executor": self._executor.name,
                "credits_before": credits.total.value,
                "balance_before": balance.value,
                "btc_usd": str(rate.usd_per_btc),
                "rate_source": rate.source,
                "sats_equivalent": sats.value,
            },
            now,
            now,
        )
        async with self._store.transaction() as tx:
            if await tx.topups(OPEN):  # another planner got there first
                return None
            await tx.insert_topup(topup)
        log.info("planned %s: $%s for %s sat", topup.id, wanted.to_usd(), sats.value // 1000)
        return topup

    def _with_fee_limit(self, amount: Msat) -> Msat:
        return amount + amount.mul_ratio(self.policy.fee_limit_ppm, 1_000_000, Rounding.UP)

    def _sats_for(self, usd: NanoUsd, usd_per_btc: Decimal) -> Msat:
        gross = usd.mul_ratio(1_000_000 + self.policy.purchase_fee_ppm, 1_000_000, Rounding.UP)
        return nusd_to_msat(gross, usd_per_btc, Rounding.UP).round_to_sat(Rounding.UP)

    def _usd_for(self, sats: Msat, usd_per_btc: Decimal) -> NanoUsd:
        from .money import msat_to_nusd

        gross = msat_to_nusd(sats, usd_per_btc, Rounding.DOWN)
        return gross.mul_ratio(1_000_000, 1_000_000 + self.policy.purchase_fee_ppm, Rounding.DOWN)

    # -- advancing --------------------------------------------------------------------------

    async def _move(
        self, topup: TopupRow, to: State, updates: dict[str, Any], entry: ledger.Entry | None = None
    ) -> TopupRow | None:
        data = {**topup.data, **updates}
        now = time.time()
        async with self._store.transaction() as tx:
            if not await tx.update_topup(
                topup.id, state=to, data=data, expected_state=topup.state, now=now
            ):
                return None
            if entry is not None:
                await ledger.post(tx, entry)
        return replace(topup, state=to, data=data, updated_at=now)

    async def advance(self, topup: TopupRow, now: float | None = None) -> TopupRow | None:
        """Take one step; the top-up afterwards (None if another worker moved it)."""
        now = time.time() if now is None else now
        match topup.state:
            case State.PLANNED:
                return await self._execute(topup)
            case State.EXECUTING:
                return await self._pay(topup)
            case State.PAID | State.AWAITING_OPERATOR:
                return await self._confirm(topup, now)
            case State.CONFIRMED:
                return await self._reconcile(topup)
        return topup

    async def _execute(self, topup: TopupRow) -> TopupRow | None:
        try:
            invoice = await self._executor.invoice(topup)
        except TopupError as exc:
            await self._tell(f"top-up {topup.id} failed before paying: {exc}")
            return await self._move(topup, State.FAILED, {"error": str(exc)})
        if invoice is None:  # manual
            await self._tell(
                f"top-up {topup.id}: please buy ${NanoUsd(topup.usd_nusd).to_usd()} of "
                f"OpenRouter credits (about {topup.data['sats_equivalent'] // 1000} sat)"
            )
            return await self._move(topup, State.AWAITING_OPERATOR, {})
        try:
            decoded = decode_invoice(invoice)
        except InvalidInvoice as exc:
            return await self._move(topup, State.FAILED, {"error": f"bad invoice: {exc}"})
        if decoded.amount is None or decoded.amount > Msat(topup.amount_msat) or decoded.expired():
            return await self._move(
                topup,
                State.FAILED,
                {"error": f"the invoice asks {decoded.amount}, more than planned or unbounded"},
            )
        return await self._move(
            topup,
            State.EXECUTING,
            {
                "invoice": invoice,
                "payment_hash": decoded.payment_hash,
                "invoice_msat": decoded.amount.value,
            },
        )

    async def _pay(self, topup: TopupRow) -> TopupRow | None:
        """Pay the stored invoice once: ask first (paid before a crash?), pay only what the
        backend has never seen, and stay ``executing`` while the outcome is unknown."""
        payment_hash = topup.data["payment_hash"]
        try:
            done = await self._lightning.payment_status(payment_hash)
        except LightningError as exc:
            log.warning("top-up %s: payment status unknown (%s); will retry", topup.id, exc)
            return topup
        if done is None:
            handed = topup.data.get("sent_at")
            if handed is not None and time.time() - handed < ABSENT_AFTER:
                return topup  # handed over moments ago: the backend may not show it yet
            # Never handed over, or handed over long enough ago that a backend still holding
            # no record of it never took it: send (one invoice is never paid twice).
            sending = await self._move(topup, State.EXECUTING, {"sent_at": time.time()})
            if sending is None:
                return None
            topup = sending
            amount = Msat(topup.data["invoice_msat"])
            limit = self._with_fee_limit(amount) - amount
            try:
                done = await self._lightning.send_payment(topup.data["invoice"], fee_limit=limit)
            except InvalidInvoice as exc:  # refused before sending
                await self._tell(f"top-up {topup.id}: the payment was refused: {exc}")
                return await self._move(topup, State.FAILED, {"error": str(exc)})
            except LightningError as exc:
                log.warning("top-up %s: payment outcome unknown (%s); will check", topup.id, exc)
                return topup
        if done.state is PaymentState.PENDING:
            log.info("top-up %s: payment pending (%s); will check", topup.id, done.reason)
            return topup
        if done.state is PaymentState.FAILED:
            await self._tell(f"top-up {topup.id}: the payment failed: {done.reason}")
            return await self._move(topup, State.FAILED, {"error": done.reason})
        amount = Msat(topup.data["invoice_msat"])
        return await self._move(
            topup,
            State.PAID,
            {"fee_msat": done.fee.value, "paid_at": time.time()},
            ledger.topup_paid(topup.id, amount, done.fee),
        )

    async def _confirm(self, topup: TopupRow, now: float) -> TopupRow | None:
        credits = await self._credits()
        rise = credits.total - NanoUsd(topup.data["credits_before"])
        wanted = NanoUsd(topup.usd_nusd)
        if rise.value * 1_000_000 >= wanted.value * self.policy.received_at_least_ppm:
            return await self._move(topup, State.CONFIRMED, {"received_nusd": rise.value})
        since = topup.data.get("paid_at", topup.created_at)
        if now - since < self.policy.confirm_within:
            return topup
        await self._tell(
            f"top-up {topup.id}: OpenRouter credits did not rise within "
            f"{self.policy.confirm_within / 3600:g} h; written off"
        )
        entry = (
            ledger.topup_expired(topup.id, Msat(topup.data["invoice_msat"]))
            if topup.state == State.PAID
            else None
        )
        return await self._move(topup, State.EXPIRED, {}, entry)

    async def _reconcile(self, topup: TopupRow) -> TopupRow | None:
        received = NanoUsd(topup.data["received_nusd"])
        if topup.data["executor"] == "manual":
            entry = ledger.credits_funded(received, topup.id, memo="manual top-up")
        else:
            entry = ledger.topup_confirmed(topup.id, Msat(topup.data["invoice_msat"]), received)
        return await self._move(topup, State.RECONCILED, {}, entry)

    async def _tell(self, message: str) -> None:
        log.warning("%s", message)
        if self._notify is not None:
            await self._notify(message)

    async def step(self, now: float | None = None) -> list[TopupRow]:
        """Plan if needed, then move every open top-up as far as it goes now."""
        await self.plan(now)
        async with self._store.read() as tx:
            open_topups = await tx.topups(OPEN)
        moved = []
        for topup in open_topups:
            current: TopupRow | None = topup
            while current is not None and current.state in OPEN:
                after = await self.advance(current, now)
                if after is None or after.state == current.state:
                    break
                current = after
            if current is not None:
                moved.append(current)
        return moved

    async def run(self, interval: float = 60.0) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("top-up step failed")
            await asyncio.sleep(interval)
