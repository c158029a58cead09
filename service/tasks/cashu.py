"""Paying with Cashu ecash (Routstr's RIP-01): a token on a request, or a token that opens a
prepaid balance.

A token is redeemed (its proofs swapped for the operator's at the mint: :mod:`.redeems`)
before anything runs, so a double-spent token never gets work; only mints on the operator's
allow list are taken. What it is worth once swapped (its face value less the mint's swap fee,
which its own proofs pay and the answer shows) becomes credit of a per-request payer
``cashu_<task id>``; the request's maximum is reserved from it as for any prepaid call, and
whatever that payer is owed once the call is settled goes back as a fresh token: the change.
The change is kept by task id, for the holder of the token that paid, so a lost response
loses nothing. A redeem a crash or a failure interrupted, found swapped later, is refunded to
the same payer: its holder fetches it as change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass

from billing import ledger
from billing.money import Msat
from billing.store import TaskRow, Tx

from ..ecash.wallet import (
    EcashRefused,
    EcashUnknown,
    EcashWallet,
    MintWallet,
    Recovered,
    Redeemed,
    mint_id,
    scrubbed,
)
from .context import Context
from .payments import Payments
from .quotes import Priced
from .redeems import RECHECK, Redeems
from .refusals import Refusal

#: How long the change of a call that ran waits for the wallet's turn before it is left for
#: its holder to fetch (the paid answer is not held back longer), in seconds.
CHANGE_WAIT = 5.0

log = logging.getLogger(__name__)


def payer_of(task_id: str) -> str:
    return f"cashu_{task_id}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Paid:
    """A redeemed token: who pays (the per-request payer), at which mint, and the mint's fee."""

    task_id: str
    mint: str
    amount_msat: int
    fee_msat: int


@dataclass(frozen=True, slots=True)
class Change:
    """What went back to the payer: a token (None when nothing was owed, or while
    ``pending``) of ``amount_msat``."""

    token: str | None
    amount_msat: int
    #: what the mint charged to mint it (the operator's)
    fee_msat: int = 0
    #: owed, but not minted now (the wallet busy or failing): fetched later by task id
    pending: bool = False


class Cashu:
    def __init__(self, ctx: Context, payments: Payments, wallet: EcashWallet | None) -> None:
        self._ctx = ctx
        self._payments = payments
        self.redeems = Redeems(ctx, wallet, self._refund)

    @property
    def wallet(self) -> EcashWallet:
        return self.redeems.wallet

    async def _refund(self, tx: Tx, digest: str, task_id: str, found: Recovered) -> None:
        """Book a swap found after the fact to ``task_id``'s payer, as :meth:`pay` books one:
        its holder fetches it as change. The ledger's key (the token's hash) books it once."""
        assert found.mint is not None
        amount, fee = Msat.from_sat(found.amount_sat), Msat.from_sat(found.fee_sat)
        entry = ledger.ecash_received(
            payer_of(task_id), mint_id(found.mint), amount, fee, key=digest
        )
        await ledger.post(tx, entry)
        await self._paid_records(tx, digest, task_id, found.mint)

    async def _paid_records(self, tx: Tx, digest: str, task_id: str, mint: str) -> None:
        await tx.set_value(f"cashu:{task_id}", json.dumps({"token_hash": digest, "mint": mint}))
        # The token is all its holder needs to find the change: no id has to survive.
        await tx.set_value(f"cashu-paid:{digest}", task_id)

    async def pay(self, token: str, priced: Priced) -> tuple[TaskRow, Paid]:
        """Redeem ``token`` for this request and reserve its maximum from it: the task, ready
        to run. Refused (nothing redeemed) unless the token covers the request's maximum."""
        total = priced.quote.total
        min_sat = -(-total.value // 1000)
        task_id = "task_" + secrets.token_hex(12)
        payer = payer_of(task_id)
        digest = token_hash(token)

        async def book(tx: Tx, redeemed: Redeemed) -> None:
            amount, fee = Msat.from_sat(redeemed.amount_sat), Msat.from_sat(redeemed.fee_sat)
            account = mint_id(redeemed.mint)
            await ledger.post(tx, ledger.ecash_received(payer, account, amount, fee, key=digest))
            await self._paid_records(tx, digest, task_id, redeemed.mint)

        redeemed = await self.redeems.redeem(token, digest, min_sat, total, task_id, book)
        amount, fee = Msat.from_sat(redeemed.amount_sat), Msat.from_sat(redeemed.fee_sat)
        paid = Paid(task_id, redeemed.mint, amount.value, fee.value)
        extra = {
            "cashu": {"mint": redeemed.mint, "amount_msat": amount.value, "fee_msat": fee.value}
        }
        try:
            task = await self._payments.reserve(
                payer, priced, kind="cashu", task_id=task_id, extra=extra
            )
        except Refusal as refused:  # e.g. over a budget: the token goes back whole, as change
            change = await self.change_or_later(task_id)
            refused.extra |= {"cashu_change": change.token, "task_id": task_id}
            raise
        return task, paid

    async def change(self, task_id: str) -> Change:
        """Pay what ``cashu_<task_id>`` is owed back as a fresh token, once; the same token
        again on later calls. Refused as pending (nothing minted) when the wallet's turn does
        not come within :data:`CHANGE_WAIT`, or minting it failed less than
        :data:`~.redeems.RECHECK` ago: no caller makes the wallet try more often."""
        wallet = self.wallet
        async with self._ctx.store.read() as tx:
            meta_raw = await tx.get_value(f"cashu:{task_id}")
        if meta_raw is None:
            raise Refusal("not_found", "no Cashu payment has that task id")
        mint = json.loads(meta_raw)["mint"]
        if (known := await self._change_known(task_id)) is not None:
            return known  # no turn taken: asking again costs the wallet nothing
        try:
            async with wallet.turn(mint, wait=CHANGE_WAIT) as at_mint:
                return await self._change_in_turn(at_mint, task_id)
        except EcashRefused:  # busy: nothing was minted
            raise _pending(5) from None

    async def _change_known(self, task_id: str) -> Change | None:
        """The change when it needs no wallet (minted already, or nothing owed), else None."""
        async with self._ctx.store.read() as tx:
            stored = await tx.get_value(f"cashu-change:{task_id}")
            owed = await ledger.agent_balance(tx, payer_of(task_id))
        kept = json.loads(stored) if stored else None
        if kept is not None and kept.get("token") is not None:
            return Change(kept["token"], kept["amount_msat"], kept["fee_msat"])
        if (kept is None and owed.value == 0) or (kept is not None and not kept["amount_msat"]):
            return Change(None, 0)
        if kept is not None and (wait := kept.get("tried_at", 0) + RECHECK - time.time()) > 0:
            raise _pending(wait)
        return None

    async def _change_in_turn(self, at_mint: MintWallet, task_id: str) -> Change:
        """Minted in the mint's turn, so two callers (in any process) never mint it twice."""
        store, mint = self._ctx.store, at_mint.mint
        key = f"cashu-change:{task_id}"
        async with store.read() as tx:
            stored = await tx.get_value(key)
        kept = json.loads(stored) if stored else None
        if kept is not None and kept.get("token") is not None:
            return Change(kept["token"], kept["amount_msat"], kept["fee_msat"])
        if kept is None:
            async with store.transaction() as tx:
                owed = await ledger.agent_balance(tx, payer_of(task_id))
                if owed.value == 0:
                    return Change(None, 0)
                sent = Msat.from_sat(owed.value // 1000)
                await ledger.post(
                    tx,
                    ledger.ecash_change(payer_of(task_id), mint_id(mint), task_id, owed, sent),
                )
                kept = {"token": None, "amount_msat": sent.value, "fee_msat": 0}
                await tx.set_value(key, json.dumps(kept))
        amount_msat = int(kept["amount_msat"])
        if amount_msat == 0:
            return Change(None, 0)
        # Booked first, then minted: a crash between leaves the record pending, and the
        # next call mints it (the proofs stay in the wallet until then).
        try:
            sent_token = await at_mint.send(amount_msat // 1000)
        except (EcashRefused, EcashUnknown) as exc:
            log.warning("the change of %s could not be minted: %s", task_id, scrubbed(str(exc)))
            async with store.transaction() as tx:
                await tx.set_value(key, json.dumps({**kept, "tried_at": time.time()}))
            raise _pending(RECHECK) from None
        fee = Msat.from_sat(sent_token.fee_sat)
        kept = {"token": sent_token.token, "amount_msat": amount_msat, "fee_msat": fee.value}
        async with store.transaction() as tx:
            if fee.value > 0:
                await ledger.post(tx, ledger.ecash_fee(mint_id(mint), f"change:{task_id}", fee))
            await tx.set_value(key, json.dumps(kept))
        return Change(sent_token.token, amount_msat, fee.value)

    async def change_or_later(self, task_id: str) -> Change:
        """:meth:`change`, or (it cannot be minted now) a pending change: the answer it goes
        with was paid for and is never lost to it."""
        try:
            return await self.change(task_id)
        except Refusal as refused:
            if refused.kind != "cashu_change_pending":
                raise
            return Change(None, 0, pending=True)

    async def paid_by(self, token: str) -> str:
        """The task ``token`` paid for (refused if it paid for none)."""
        async with self._ctx.store.read() as tx:
            task_id = await tx.get_value(f"cashu-paid:{token_hash(token)}")
        if task_id is None:
            raise Refusal("not_found", "that token paid for no request here")
        return task_id

    async def owner(self, task_id: str, token: str) -> None:
        """Refused unless ``token`` is the one that paid for ``task_id``."""
        async with self._ctx.store.read() as tx:
            meta_raw = await tx.get_value(f"cashu:{task_id}")
        if meta_raw is None or not hmac.compare_digest(
            json.loads(meta_raw)["token_hash"], token_hash(token)
        ):
            raise Refusal("not_found", "no Cashu payment with that token has that task id")

    async def open_account(self, token: str) -> str:
        """The prepaid account a token opened (RIP-01's ``Authorization: Bearer cashu...``):
        the token, redeemed, is its balance; the same token string is its key from then on."""
        digest = token_hash(token)
        async with self._ctx.store.read() as tx:
            account = await tx.api_account_by_key_hash(digest)
        if account is not None:
            return account
        account = "acct_" + secrets.token_hex(10)

        async def book(tx: Tx, redeemed: Redeemed) -> None:
            amount, fee = Msat.from_sat(redeemed.amount_sat), Msat.from_sat(redeemed.fee_sat)
            await tx.insert_api_account(account, digest, time.time())
            await ledger.post(
                tx, ledger.ecash_received(account, mint_id(redeemed.mint), amount, fee, key=digest)
            )

        task_id = "task_" + secrets.token_hex(12)  # the refund's, if a crash interrupts
        try:
            await self.redeems.redeem(token, digest, 1, Msat(1000), task_id, book)
        except Refusal as refused:
            if refused.kind != "cashu_token_spent":
                raise
            async with self._ctx.store.read() as tx:  # opened by a request beside this one?
                opened = await tx.api_account_by_key_hash(digest)
            if opened is None:
                raise
            return opened
        return account


def _pending(retry_after: float) -> Refusal:
    return Refusal(
        "cashu_change_pending",
        "the change could not be minted now; ask again for it with the token that paid",
        retry_after=max(1, round(retry_after)),
    )
