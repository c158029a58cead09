"""Paying with Cashu ecash (Routstr's RIP-01): a token on a request, or a token that opens a
prepaid balance.

A token is redeemed (its proofs swapped for the operator's at the mint) before anything runs,
so a double-spent token never gets work; only mints on the operator's allow list are taken.
What it is worth once swapped (its face value less the mint's swap fee, which its own proofs
pay and the answer shows) becomes credit of a per-request payer ``cashu_<task id>``; the
request's maximum is reserved from it as for any prepaid call, and whatever that payer is
owed once the call is settled goes back as a fresh token: the change. The change is kept by
task id, for the holder of the token that paid, so a lost response loses nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from billing import ledger
from billing.money import Msat
from billing.store import TaskRow

from ..ecash.wallet import EcashRefused, EcashUnknown, EcashWallet, Redeemed, mint_id
from .context import Context
from .payments import Payments
from .quotes import Priced
from .refusals import Refusal

#: A wallet's refusal as a refusal of the request: (kind, whether a retry can pass).
_REFUSED = {
    "below_price": "cashu_amount_too_low",
    "mint_not_allowed": "cashu_mint_not_allowed",
    "spent": "cashu_token_spent",
    "pending": "cashu_token_pending",
    "invalid_token": "cashu_invalid_token",
    "unit_not_supported": "cashu_unit_not_supported",
    "too_many_proofs": "cashu_too_many_proofs",
    "mint_unreachable": "cashu_mint_unavailable",
    "mint_refused": "cashu_token_refused",
    "wallet_error": "cashu_wallet_error",
    "wallet_unavailable": "cashu_wallet_unavailable",
}

#: Refusals a retry may pass later.
_LATER = frozenset({"cashu_mint_unavailable", "cashu_wallet_unavailable"})


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
    """What went back to the payer: a token (None when nothing was owed) of ``amount_msat``."""

    token: str | None
    amount_msat: int
    #: what the mint charged to mint it (the operator's)
    fee_msat: int = 0


class Cashu:
    def __init__(self, ctx: Context, payments: Payments, wallet: EcashWallet | None) -> None:
        self._ctx = ctx
        self._payments = payments
        self._wallet_ = wallet

    @property
    def wallet(self) -> EcashWallet:
        if self._wallet_ is None or not self._wallet_.mints:
            raise Refusal(
                "cashu_unavailable", "this service takes no Cashu ecash", should_retry=False
            )
        return self._wallet_

    async def _redeem(self, token: str, min_sat: int, price: Msat) -> Redeemed:
        wallet = self.wallet
        try:
            async with wallet.lock(""):
                return await wallet.redeem(token, min_sat)
        except EcashRefused as exc:
            kind = _REFUSED.get(exc.kind, "cashu_wallet_error")
            extra: dict[str, object] = dict(exc.extra)
            if exc.kind == "below_price":
                extra |= {"price_msat": price.value, "price_sat": min_sat}
            if exc.kind == "mint_not_allowed":
                extra["mints"] = list(wallet.mints)
            raise Refusal(
                kind,
                f"{exc.detail}" + (f"; this request needs {min_sat} sat" if min_sat else ""),
                extra=extra,
                retry_after=5 if kind in _LATER else None,
                should_retry=kind in _LATER,
            ) from None
        except EcashUnknown as exc:
            raise Refusal(
                "cashu_outcome_unknown",
                f"{exc}; the token may have been redeemed: keep it and ask the operator",
                should_retry=False,
            ) from None

    async def pay(self, token: str, priced: Priced) -> tuple[TaskRow, Paid]:
        """Redeem ``token`` for this request and reserve its maximum from it: the task, ready
        to run. Refused (nothing redeemed) unless the token covers the request's maximum."""
        total = priced.quote.total
        min_sat = -(-total.value // 1000)
        redeemed = await self._redeem(token, min_sat, total)
        task_id = "task_" + secrets.token_hex(12)
        payer = payer_of(task_id)
        amount, fee = Msat.from_sat(redeemed.amount_sat), Msat.from_sat(redeemed.fee_sat)
        async with self._ctx.store.transaction() as tx:
            await ledger.post(
                tx,
                ledger.ecash_received(
                    payer, mint_id(redeemed.mint), amount, fee, key=token_hash(token)
                ),
            )
            meta = {"token_hash": token_hash(token), "mint": redeemed.mint}
            await tx.set_value(f"cashu:{task_id}", json.dumps(meta))
            # The token is all its holder needs to find the change: no id has to survive.
            await tx.set_value(f"cashu-paid:{token_hash(token)}", task_id)
        paid = Paid(task_id, redeemed.mint, amount.value, fee.value)
        extra = {
            "cashu": {"mint": redeemed.mint, "amount_msat": amount.value, "fee_msat": fee.value}
        }
        try:
            task = await self._payments.reserve(
                payer, priced, kind="cashu", task_id=task_id, extra=extra
            )
        except Refusal as refused:  # e.g. over a budget: the token goes back whole, as change
            change = await self.change(task_id)
            refused.extra |= {"cashu_change": change.token, "task_id": task_id}
            raise
        return task, paid

    async def change(self, task_id: str) -> Change:
        """Pay what ``cashu_<task_id>`` is owed back as a fresh token, once; the same token
        again on later calls."""
        wallet = self.wallet
        store = self._ctx.store
        key = f"cashu-change:{task_id}"
        async with wallet.lock(""):
            async with store.read() as tx:
                meta_raw = await tx.get_value(f"cashu:{task_id}")
                stored = await tx.get_value(key)
            if meta_raw is None:
                raise Refusal("not_found", "no Cashu payment has that task id")
            mint = json.loads(meta_raw)["mint"]
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
                sent_token = await wallet.send(mint, amount_msat // 1000)
            except (EcashRefused, EcashUnknown) as exc:
                raise Refusal(
                    "cashu_change_pending",
                    f"the change could not be minted now ({exc}); ask again for it by task id",
                    retry_after=5,
                ) from None
            fee = Msat.from_sat(sent_token.fee_sat)
            kept = {"token": sent_token.token, "amount_msat": amount_msat, "fee_msat": fee.value}
            async with store.transaction() as tx:
                if fee.value > 0:
                    await ledger.post(tx, ledger.ecash_fee(mint_id(mint), f"change:{task_id}", fee))
                await tx.set_value(key, json.dumps(kept))
            return Change(sent_token.token, amount_msat, fee.value)

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
        redeemed = await self._redeem(token, 1, Msat(1000))
        account = "acct_" + secrets.token_hex(10)
        amount, fee = Msat.from_sat(redeemed.amount_sat), Msat.from_sat(redeemed.fee_sat)
        async with self._ctx.store.transaction() as tx:
            await tx.insert_api_account(account, digest, time.time())
            await ledger.post(
                tx, ledger.ecash_received(account, mint_id(redeemed.mint), amount, fee, key=digest)
            )
        return account
