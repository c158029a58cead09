"""Paying with Cashu ecash (Routstr's RIP-01): a token on a request, or a token that opens a
prepaid balance.

A token is redeemed (its proofs swapped for the operator's at the mint) before anything runs,
so a double-spent token never gets work; only mints on the operator's allow list are taken.
What it is worth once swapped (its face value less the mint's swap fee, which its own proofs
pay and the answer shows) becomes credit of a per-request payer ``cashu_<task id>``; the
request's maximum is reserved from it as for any prepaid call, and whatever that payer is
owed once the call is settled goes back as a fresh token: the change. The change is kept by
task id, for the holder of the token that paid, so a lost response loses nothing.

A token's face (mint, unit, proofs, value) is read in process first, so a token the wallet
would refuse costs no write and no wallet process; a redeem about to be tried is counted by
:data:`redeem_gate` (the HTTP layer's per-address limit).

Before the wallet is asked to redeem a token, an intent (the token's hash, the task id, the
mint) is committed; the booking closes it, in the same turn of the wallet at that mint (see
:mod:`..ecash.wallet`). One a crash left open is resolved from the wallet's own record of the
swap and the mint (:meth:`Cashu.recover`, at start-up and when the token asks for its
change): swapped into this wallet, it is booked as a refund to the token's holder (the
change, fetched with the token); never swapped, it is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from billing import ledger
from billing.money import Msat
from billing.store import TaskRow, Tx
from billing.store.contracts import KeysTx

from ..ecash.wallet import (
    EcashRefused,
    EcashUnknown,
    EcashWallet,
    MintWallet,
    Redeemed,
    mint_id,
)
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
    "wallet_busy": "cashu_wallet_busy",
}

#: Refusals a retry may pass later.
_LATER = frozenset({"cashu_mint_unavailable", "cashu_wallet_unavailable", "cashu_wallet_busy"})

#: The hashes of the tokens whose redeem intent is open.
_OPEN = "cashu-intents"
#: What a redeem came to when nothing was redeemed (its intent is deleted).
_NOTHING = ("dropped", "none", "unspent", "spent_elsewhere")

#: Awaited before a token is redeemed, when set: the HTTP layer sets it to count the redeem
#: against the ecash limits of the caller's address (it raises to refuse).
redeem_gate: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "redeem_gate", default=None
)

#: How long an open intent is left alone after the mint was asked about it, in seconds.
RECHECK = 30.0
#: How long the change of a call that ran waits for the wallet's turn before it is left for
#: its holder to fetch (the paid answer is not held back longer), in seconds.
CHANGE_WAIT = 5.0

#: Books a redeemed token, in the transaction that closes its intent.
Booking = Callable[[Tx, Redeemed], Awaitable[None]]

log = logging.getLogger(__name__)


def _intent_key(digest: str) -> str:
    return f"cashu-intent:{digest}"


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
        self._wallet_ = wallet

    @property
    def wallet(self) -> EcashWallet:
        if self._wallet_ is None or not self._wallet_.mints:
            raise Refusal(
                "cashu_unavailable", "this service takes no Cashu ecash", should_retry=False
            )
        return self._wallet_

    async def _set_intent(self, tx: KeysTx, digest: str, intent: dict[str, Any]) -> None:
        """Record an intent's state; one that came to nothing is deleted (it proves nothing)."""
        if intent["state"] in _NOTHING:
            await tx.delete_value(_intent_key(digest))
        else:
            await tx.set_value(_intent_key(digest), json.dumps(intent))
        raw = await tx.get_value(_OPEN)
        opened = set(json.loads(raw) if raw else ())
        opened = opened | {digest} if intent["state"] == "open" else opened - {digest}
        await tx.set_value(_OPEN, json.dumps(sorted(opened)))

    async def _intent(self, digest: str) -> dict[str, Any] | None:
        async with self._ctx.store.read() as tx:
            raw = await tx.get_value(_intent_key(digest))
        return json.loads(raw) if raw else None

    async def _redeem(
        self, token: str, min_sat: int, price: Msat, task_id: str, book: Booking
    ) -> Redeemed:
        """Redeem ``token`` and ``book`` it, in one turn of the wallet at its mint, under an
        intent committed before the swap and closed by the booking: a crash anywhere leaves
        the intent for :meth:`recover`, and no other process resolves it while this one may
        still book it (the turn spans both)."""
        wallet = self.wallet
        try:
            mint = wallet.screen(token, min_sat)  # in process: nothing written, nothing started
            if (gate := redeem_gate.get()) is not None:
                await gate()
            async with wallet.turn(mint) as at_mint:
                return await self._redeem_in_turn(at_mint, token, min_sat, task_id, book)
        except EcashRefused as exc:
            raise self._refusal(exc, min_sat, price) from None

    async def _redeem_in_turn(
        self, at_mint: MintWallet, token: str, min_sat: int, task_id: str, book: Booking
    ) -> Redeemed:
        digest = token_hash(token)
        await self._recover_in_turn(at_mint, digest)  # an earlier attempt a crash interrupted
        earlier = await self._intent(digest)
        if earlier is not None and earlier["state"] == "refunded":
            raise Refusal(
                "cashu_token_spent",
                "this token was redeemed for a request a restart interrupted: its value is "
                "refunded, at GET /v1/cashu/change with this token in X-Cashu",
                should_retry=False,
            )
        if earlier is not None and earlier["state"] in ("open", "booked"):
            raise Refusal(
                "cashu_token_spent" if earlier["state"] == "booked" else "cashu_outcome_unknown",
                "this token is being redeemed, or was: keep it and ask for its change",
                should_retry=False,
            )
        intent = {"state": "open", "task_id": task_id, "mint": at_mint.mint, "at": time.time()}
        async with self._ctx.store.transaction() as tx:
            await self._set_intent(tx, digest, intent)
        try:
            redeemed = await at_mint.redeem(token, min_sat)
        except (EcashRefused, EcashUnknown) as exc:
            if isinstance(exc, EcashRefused) and exc.extra.pop("swapped", None) is False:
                async with self._ctx.store.transaction() as tx:  # nothing redeemed
                    await self._set_intent(tx, digest, {**intent, "state": "dropped"})
            else:  # the swap may have happened: the mint says now, in this turn
                await self._recover_in_turn(at_mint, digest)
            raise await self._failed(exc, digest) from None
        async with self._ctx.store.transaction() as tx:
            await book(tx, redeemed)
            await self._set_intent(tx, digest, {"state": "booked", "task_id": task_id})
        at_mint.forget(digest)  # booked: the swap's journal has served
        return redeemed

    async def _failed(self, exc: EcashRefused | EcashUnknown, digest: str) -> Exception:
        """What a redeem that failed is answered with, once its intent is resolved (or not)."""
        intent = await self._intent(digest)
        if intent is None and isinstance(exc, EcashRefused):
            return exc  # nothing redeemed: refused for the wallet's reason
        if intent is None:
            return Refusal(
                "cashu_wallet_unavailable",
                f"{exc}; nothing was redeemed: the token is still yours",
                retry_after=5,
            )
        if intent["state"] == "refunded":
            return Refusal(
                "cashu_refunded",
                "the token was redeemed but the request did not run: its value is refunded, at "
                "GET /v1/cashu/change with this token in X-Cashu",
                should_retry=False,
            )
        return Refusal(
            "cashu_outcome_unknown",
            f"{exc}; the token may have been redeemed: keep it and ask for its change "
            "(GET /v1/cashu/change with it) in a while",
            should_retry=False,
        )

    def _refusal(self, exc: EcashRefused, min_sat: int, price: Msat) -> Refusal:
        kind = _REFUSED.get(exc.kind, "cashu_wallet_error")
        detail = exc.detail
        if kind == "cashu_wallet_error":  # the wallet's own words stay in the operator's log
            log.warning("the ecash wallet refused a token: %s", exc.detail)
            detail = "the ecash wallet could not redeem the token; it was not redeemed"
        extra: dict[str, object] = {k: v for k, v in exc.extra.items() if k != "swapped"}
        if exc.kind == "below_price":
            extra |= {"price_msat": price.value, "price_sat": min_sat}
        if exc.kind == "mint_not_allowed":
            extra["mints"] = list(self.wallet.mints)
        return Refusal(
            kind,
            detail + (f"; this request needs {min_sat} sat" if min_sat else ""),
            extra=extra,
            retry_after=5 if kind in _LATER else None,
            should_retry=kind in _LATER,
        )

    async def recover(self, digest: str) -> None:
        """Resolve the open intent of the token whose hash is ``digest``, if any, in a turn
        of the wallet at its mint (a busy wallet: left for later)."""
        wallet = self._wallet_
        intent = await self._intent(digest) if wallet is not None else None
        if wallet is None or intent is None or intent["state"] != "open":
            return
        if time.time() - float(intent.get("checked_at", 0)) < RECHECK:
            return  # the mint was asked lately: a caller cannot make the wallet ask again
        mint = intent.get("mint") or wallet.journaled_at(digest) or wallet.mints[0]
        try:
            async with wallet.turn(mint) as at_mint:
                await self._recover_in_turn(at_mint, digest)
        except EcashRefused as exc:
            log.warning("cashu intent %s: not resolved now: %s", digest[:12], exc)

    async def _recover_in_turn(self, at_mint: MintWallet, digest: str) -> None:
        """In the mint's turn, an open intent is no live redeem's (that one would hold the
        turn): swapped into this wallet, it is booked once as a refund to the token's holder;
        never swapped (or spent by someone else), dropped; not known yet, left open."""
        intent = await self._intent(digest)
        if intent is None or intent["state"] != "open":
            return
        try:
            found = await at_mint.recover(digest)
        except (EcashRefused, EcashUnknown) as exc:
            log.warning("cashu intent %s: the wallet cannot tell yet: %s", digest[:12], exc)
            await self._checked(digest, intent)
            return
        if found.state not in ("redeemed", *_NOTHING):
            log.warning("cashu intent %s stays open: %s", digest[:12], found.state)
            await self._checked(digest, intent)
            return
        async with self._ctx.store.transaction() as tx:
            raw = await tx.get_value(_intent_key(digest))
            if raw is None or json.loads(raw)["state"] != "open":
                return  # resolved meanwhile
            if found.state != "redeemed":
                await self._set_intent(tx, digest, {**intent, "state": found.state})
                return
            task_id = str(intent["task_id"])
            amount, fee = Msat.from_sat(found.amount_sat), Msat.from_sat(found.fee_sat)
            # The ledger's key (the token's hash) books it once, whoever gets here.
            await ledger.post(
                tx,
                ledger.ecash_received(
                    payer_of(task_id), mint_id(at_mint.mint), amount, fee, key=digest
                ),
            )
            meta = {"token_hash": digest, "mint": at_mint.mint}
            await tx.set_value(f"cashu:{task_id}", json.dumps(meta))
            await tx.set_value(f"cashu-paid:{digest}", task_id)
            await self._set_intent(tx, digest, {**intent, "state": "refunded"})
        at_mint.forget(digest)
        log.warning("cashu intent %s: swapped before a crash; refunded", digest[:12])

    async def _checked(self, digest: str, intent: dict[str, Any]) -> None:
        async with self._ctx.store.transaction() as tx:
            await self._set_intent(tx, digest, {**intent, "checked_at": time.time()})

    async def recover_all(self) -> None:
        """Resolve every open intent (at start-up: any open one is a dead process's)."""
        async with self._ctx.store.read() as tx:
            raw = await tx.get_value(_OPEN)
        for digest in json.loads(raw) if raw else ():
            await self.recover(digest)

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
            meta = {"token_hash": digest, "mint": redeemed.mint}
            await tx.set_value(f"cashu:{task_id}", json.dumps(meta))
            # The token is all its holder needs to find the change: no id has to survive.
            await tx.set_value(f"cashu-paid:{digest}", task_id)

        redeemed = await self._redeem(token, min_sat, total, task_id, book)
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

    async def change(self, task_id: str, *, wait: float | None = None) -> Change:
        """Pay what ``cashu_<task_id>`` is owed back as a fresh token, once; the same token
        again on later calls. ``wait``: for the wallet's turn (default: its timeout)."""
        wallet = self.wallet
        async with self._ctx.store.read() as tx:
            meta_raw = await tx.get_value(f"cashu:{task_id}")
        if meta_raw is None:
            raise Refusal("not_found", "no Cashu payment has that task id")
        mint = json.loads(meta_raw)["mint"]
        try:
            async with wallet.turn(mint, wait=wait) as at_mint:
                return await self._change_in_turn(at_mint, task_id)
        except EcashRefused as exc:  # busy: nothing was minted
            raise Refusal(
                "cashu_change_pending",
                f"the change could not be minted now ({exc}); ask again for it by task id",
                retry_after=5,
            ) from None

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

    async def change_or_later(self, task_id: str) -> Change:
        """:meth:`change`, or (it cannot be minted now) a pending change: the answer it goes
        with was paid for and is never lost to it."""
        try:
            return await self.change(task_id, wait=CHANGE_WAIT)
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
            await self._redeem(token, 1, Msat(1000), task_id, book)
        except Refusal as refused:
            if refused.kind != "cashu_token_spent":
                raise
            async with self._ctx.store.read() as tx:  # opened by a request beside this one?
                opened = await tx.api_account_by_key_hash(digest)
            if opened is None:
                raise
            return opened
        return account
