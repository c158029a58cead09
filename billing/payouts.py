"""An outgoing payment's life (a withdrawal to an agent's own invoice).

    reserved -> in_flight -> succeeded | failed

- ``reserved``: the amount and the fee limit moved from the agent's balance into escrow
  (``withdraw-reserve:W``), in the same transaction that stored the payout. Nothing was handed
  to the backend yet.
- ``in_flight``: committed *before* the backend is asked to pay, so after a crash a payout that
  is still ``reserved`` was never sent and is refunded, and one ``in_flight`` is asked about.
- ``succeeded``: the backend says it was paid; the fee the route really cost is booked
  (``withdraw:W``).
- ``failed``: the backend says it failed for good, or holds no payment to the hash long after it
  was handed over; escrow returns to the agent (``withdraw-failed:W``).

Only a definitive failure refunds. A payout whose outcome is unknown (in flight, a lost answer, a
dropped stream, a backend that cannot be reached) stays in escrow, and :meth:`Payouts.sweep`
asks the backend about it until it is final: on start-up, then every sweep interval. Each move is
a compare-and-set on the state committed with its ledger entry, so the two endings exclude each
other even when a request and the sweep race.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from dataclasses import replace

from . import ledger
from .lightning import (
    InvalidInvoice,
    LightningBackend,
    LightningError,
    PaymentOutcome,
    PaymentState,
    decode_invoice,
)
from .money import Msat, Rounding
from .store import PAYOUT_CLAIM, PayoutRow, Store

log = logging.getLogger(__name__)

#: Routing fee limit when the agent does not name one: 1 % of the amount, at least 10 sat.
DEFAULT_FEE_PPM = 10_000
MIN_FEE_LIMIT = Msat(10_000)
#: Open payouts one sweep claims at most (the rest wait for the next, or another replica).
SWEEP_BATCH = 1000


class State(enum.StrEnum):
    RESERVED = "reserved"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


OPEN = (State.RESERVED, State.IN_FLIGHT)


class PayoutRefused(Exception):
    """A withdrawal refused before any money moved. ``kind`` is stable for clients."""

    def __init__(self, kind: str, detail: str, *, balance: Msat | None = None) -> None:
        super().__init__(detail)
        # invalid_invoice | own_invoice | invoice_already_used | insufficient | fee_limit_too_low
        self.kind = kind
        self.detail = detail
        self.balance = balance


def default_fee_limit(amount: Msat) -> Msat:
    return max(amount.mul_ratio(DEFAULT_FEE_PPM, 1_000_000, Rounding.UP), MIN_FEE_LIMIT)


def ref_of(payment_hash: str) -> str:
    """The ledger ref of the withdrawal to ``payment_hash`` (escrow account, entry keys)."""
    return "wd_" + payment_hash[:24]


class Payouts:
    def __init__(
        self,
        store: Store,
        lightning: LightningBackend,
        *,
        patience: float = 30.0,
        poll: float = 0.5,
        absent_after: float = 120.0,
        give_up_after: int = 60,
        reserved_grace: float = 30.0,
        owner: str | None = None,
        claim_for: float = 60.0,
    ) -> None:
        self._store = store
        self._lightning = lightning
        #: How long a withdrawal request waits for a final outcome before answering pending.
        self.patience = patience
        self._poll = poll
        #: A payout the backend still holds no record of this long after it was handed over
        #: was never taken: it failed. (Shorter would race a pay call still on its way.)
        self._absent_after = absent_after
        self._give_up_after = give_up_after
        #: On a shared database a ``reserved`` payout this young may be another replica's,
        #: about to be sent: the sweep leaves it alone until then.
        self._reserved_grace = reserved_grace
        #: Payouts a task of this process is sending: the sweep leaves them alone.
        self._in_hand: set[str] = set()
        #: Who this process's sweep claims open payouts as, and for how long each time (a
        #: claim this sweep does not finish is its own again at the next, and another
        #: replica's once it runs out).
        self._owner = owner or f"payouts-{secrets.token_hex(6)}"
        self._claim_for = claim_for
        self._jobs: set[asyncio.Task[PayoutRow]] = set()

    # -- a withdrawal ------------------------------------------------------------------------

    async def withdraw(self, agent: str, bolt11: str, fee_limit: Msat | None) -> PayoutRow:
        """Reserve, pay, and wait up to :attr:`patience` for the outcome. The payout as it
        stands then: ``succeeded``, ``failed`` (refunded) or still ``in_flight`` (pending: the
        payment goes on, and so does the looking)."""
        payout = await self._reserve(agent, bolt11, fee_limit)
        job = asyncio.create_task(self._drive(payout, time.monotonic() + self.patience))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(job), self.patience)
        except TimeoutError:
            return await self.get(payout.payment_hash) or payout

    async def _reserve(self, agent: str, bolt11: str, fee_limit: Msat | None) -> PayoutRow:
        try:
            decoded = decode_invoice(bolt11)
        except InvalidInvoice as exc:
            raise PayoutRefused("invalid_invoice", str(exc)) from None
        if decoded.amount is None:
            raise PayoutRefused("invalid_invoice", "the invoice must name an amount")
        if decoded.expired():
            raise PayoutRefused("invalid_invoice", "the invoice has expired")
        amount = decoded.amount
        floor = self._lightning.fee_floor(amount)
        if fee_limit is not None and fee_limit < floor:
            raise PayoutRefused(
                "fee_limit_too_low",
                f"this wallet may spend up to {floor.value} msat on routing a payment of "
                f"{amount.value} msat and cannot be held to less: set fee_limit_msat to at "
                "least that (what is not spent comes back)",
            )
        limit = fee_limit if fee_limit is not None else max(default_fee_limit(amount), floor)
        now = time.time()
        payout = PayoutRow(
            decoded.payment_hash,
            ref_of(decoded.payment_hash),
            agent,
            bolt11,
            amount.value,
            limit.value,
            State.RESERVED,
            now,
            now,
        )
        self._in_hand.add(payout.payment_hash)  # before the commit: the sweep must not see it
        try:
            async with self._store.transaction() as tx:
                if await tx.invoice(decoded.payment_hash) is not None:
                    # Paying satrouter's own invoice from its own wallet moves nothing, and
                    # LNbits would book it as an outgoing payment: the invoice never settles.
                    raise PayoutRefused(
                        "own_invoice",
                        "this invoice is one of satrouter's own (a deposit, a task or an L402 "
                        "invoice): pay it from your wallet, or spend your balance directly",
                    )
                if not await tx.insert_payout(payout):
                    raise PayoutRefused(
                        "invoice_already_used", "this invoice was already withdrawn to"
                    )
                entry = ledger.withdrawal_reserve(agent, payout.ref, amount, limit)
                if not await ledger.post(tx, entry):
                    raise PayoutRefused(
                        "invoice_already_used", "this invoice was already withdrawn to"
                    )
        except ledger.InsufficientFunds as exc:
            self._in_hand.discard(payout.payment_hash)
            raise PayoutRefused(
                "insufficient",
                f"withdrawing {amount.value} msat with a fee limit of {limit.value} msat "
                f"needs {(amount + limit).value} msat; the balance is {exc.balance} msat",
                balance=Msat(exc.balance),
            ) from None
        except ledger.IdempotencyConflict:
            self._in_hand.discard(payout.payment_hash)
            raise PayoutRefused(
                "invoice_already_used", "this invoice was already withdrawn to"
            ) from None
        except BaseException:
            self._in_hand.discard(payout.payment_hash)
            raise
        return payout

    async def _drive(self, payout: PayoutRow, until: float) -> PayoutRow:
        """Send a reserved payout, then follow it until it is final or ``until`` passes; the
        sweep takes over after that."""
        try:
            sending = await self._move(payout, State.IN_FLIGHT, attempted_at=time.time())
            if sending is None:
                return await self.get(payout.payment_hash) or payout
            try:
                outcome = await self._lightning.send_payment(
                    sending.bolt11,
                    fee_limit=Msat(sending.fee_limit_msat),
                    give_up_after=self._give_up_after,
                )
            except InvalidInvoice as exc:  # refused before sending
                outcome = PaymentOutcome(sending.payment_hash, PaymentState.FAILED, reason=str(exc))
            except Exception as exc:  # whatever went wrong, the payment may be out there
                reason = f"sending raised {exc!r}"
                outcome = PaymentOutcome(sending.payment_hash, PaymentState.PENDING, reason=reason)
            current = await self._record(sending, outcome)
            while current.state == State.IN_FLIGHT and time.monotonic() < until:
                await asyncio.sleep(self._poll)
                current = await self._check(current)
            return current
        finally:
            self._in_hand.discard(payout.payment_hash)

    # -- looking up and resolving ------------------------------------------------------------

    async def get(self, payment_hash: str) -> PayoutRow | None:
        async with self._store.read() as tx:
            return await tx.payout(payment_hash)

    async def _check(self, payout: PayoutRow) -> PayoutRow:
        """Ask the backend about an in-flight payout and record a final answer."""
        try:
            known = await self._lightning.payment_status(payout.payment_hash)
        except LightningError as exc:
            log.info("payout %s: status unknown for now (%s)", payout.ref, exc)
            return payout
        if known is None:
            handed = payout.attempted_at or payout.created_at
            if time.time() - handed < self._absent_after:
                return payout  # the pay call may still be on its way
            known = PaymentOutcome(
                payout.payment_hash,
                PaymentState.FAILED,
                reason="the backend holds no payment to this invoice",
            )
        return await self._record(payout, known)

    async def sweep(self) -> int:
        """Resolve every open payout nobody in this process is sending: a ``reserved`` one
        was never sent (a crash before the hand-over) and is refunded (on a database replicas
        share, once it is older than the grace: until then another may be sending it); an
        ``in_flight`` one is asked about. The number that became final.

        The payouts are claimed first (``ClaimsTx``): replicas sweeping at once never both ask
        the backend about one. A claim changes no outcome (each move stays a compare-and-set);
        it is dropped once the payout is final and runs out if this process dies."""
        async with self._store.read() as tx:
            if not await tx.payouts_in_states(OPEN):
                return 0  # the usual case: no write transaction
        now = time.time()
        async with self._store.transaction() as tx:
            open_payouts = await tx.claim_payouts(
                OPEN, self._owner, now + self._claim_for, now, SWEEP_BATCH
            )
        done = 0
        for payout in open_payouts:
            if payout.payment_hash in self._in_hand:
                continue
            if payout.state == State.RESERVED:
                if self._store.shared and now - payout.updated_at < self._reserved_grace:
                    continue  # perhaps in another replica's hands, between reserve and send
                after = await self._record(
                    payout,
                    PaymentOutcome(
                        payout.payment_hash,
                        PaymentState.FAILED,
                        reason="interrupted before it was sent",
                    ),
                )
            else:
                after = await self._check(payout)
            if after.state in (State.SUCCEEDED, State.FAILED):
                done += 1
                async with self._store.transaction() as tx:
                    await tx.drop_claim(PAYOUT_CLAIM, payout.payment_hash, self._owner)
        return done

    async def run(self, interval: float) -> None:
        """The sweep, now (start-up: payouts a crash left open) and every ``interval``."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("payout sweep failed")
            await asyncio.sleep(interval)

    # -- moves -------------------------------------------------------------------------------

    async def _record(self, payout: PayoutRow, outcome: PaymentOutcome) -> PayoutRow:
        if outcome.state is PaymentState.PENDING:
            if outcome.reason:
                log.info("payout %s pending: %s", payout.ref, outcome.reason)
            return payout
        amount, limit = Msat(payout.amount_msat), Msat(payout.fee_limit_msat)
        if outcome.state is PaymentState.SUCCEEDED:
            if outcome.fee > limit:
                log.warning(
                    "payout %s: the route cost %s, over the agent's limit %s: the operator "
                    "bears the excess",
                    payout.ref,
                    outcome.fee,
                    limit,
                )
            entry = ledger.withdrawal_paid(payout.agent, payout.ref, amount, limit, outcome.fee)
            moved = await self._move(
                payout,
                State.SUCCEEDED,
                entry,
                fee_msat=outcome.fee.value,
                preimage=outcome.preimage,
            )
        else:
            log.warning("payout %s failed: %s; refunded", payout.ref, outcome.reason)
            entry = ledger.withdrawal_failed(payout.agent, payout.ref, amount, limit)
            moved = await self._move(payout, State.FAILED, entry, error=outcome.reason[:500])
        return moved or await self.get(payout.payment_hash) or payout

    async def _move(
        self,
        payout: PayoutRow,
        to: State,
        entry: ledger.Entry | None = None,
        *,
        attempted_at: float | None = None,
        fee_msat: int | None = None,
        preimage: str | None = None,
        error: str | None = None,
    ) -> PayoutRow | None:
        """Compare-and-set ``payout`` to ``to`` with its ledger entry; None if it moved on."""
        after = replace(
            payout,
            state=to,
            updated_at=time.time(),
            attempted_at=attempted_at if attempted_at is not None else payout.attempted_at,
            fee_msat=fee_msat,
            preimage=preimage,
            error=error,
        )
        async with self._store.transaction() as tx:
            if not await tx.update_payout(after, expected_state=payout.state):
                return None
            if entry is not None:
                await ledger.post(tx, entry)
        return after
