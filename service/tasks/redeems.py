"""Redeeming Cashu tokens so that no token is lost, credited twice or credited when spent
elsewhere, whatever crashes, fails or runs beside it.

A token's face (mint, unit, proofs, value) is read in process first, so a token the wallet
would refuse costs no write and no wallet process; a redeem about to be tried is then counted
by :data:`redeem_gate` when the HTTP layer sets it.

Each redeem has an intent, kept by the token's hash: committed ``open`` (with the task id and
the mint) before the wallet is asked to swap, and closed in the same turn of the wallet at
that mint (:meth:`..ecash.wallet.EcashWallet.turn`), so whoever finds an intent open while
holding the turn knows no live redeem holds it. An intent ends:

- ``booked``: the redeem was booked by its caller (:data:`Booking`);
- ``refunded``: a recovery found the swap's outputs in the wallet (NUT-09 restore of the
  counters the wallet journaled before it asked the mint) and booked the token's value as a
  refund to the intent's task, which its holder fetches as change;
- deleted: nothing was redeemed (refused before the swap or by the mint, never journaled,
  its proofs still unspent at the mint (NUT-07) long after any swap sent could land, or spent
  by someone else).

It stays ``open`` while the wallet or the mint cannot tell (pending, unreachable): asked
again at most every :data:`RECHECK` seconds, by its holder, by a new attempt with the same
token, or by the sweep (:meth:`Redeems.recover_all`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from billing.money import Msat
from billing.store import Tx
from billing.store.contracts import KeysTx

from ..ecash.wallet import (
    EcashRefused,
    EcashUnknown,
    EcashWallet,
    MintWallet,
    Recovered,
    Redeemed,
    scrubbed,
)
from .context import Context
from .refusals import Refusal

#: A wallet's refusal as a refusal of the request.
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

#: The hashes of the tokens whose intent is open.
_OPEN = "cashu-intents"
#: How long an open intent is left alone after the mint was asked about it, in seconds.
RECHECK = 30.0

#: Awaited before a token is redeemed, when set: the HTTP layer sets it to count the redeem
#: against the redeem limit of the caller's address (it raises to refuse).
redeem_gate: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "redeem_gate", default=None
)

#: Books a redeemed token, in the transaction that closes its intent.
Booking = Callable[[Tx, Redeemed], Awaitable[None]]
#: Books what a recovery found swapped (digest, task id, what the wallet holds), likewise.
Refund = Callable[[Tx, str, str, Recovered], Awaitable[None]]

log = logging.getLogger(__name__)


def _intent_key(digest: str) -> str:
    return f"cashu-intent:{digest}"


class Redeems:
    def __init__(self, ctx: Context, wallet: EcashWallet | None, refund: Refund) -> None:
        self._ctx = ctx
        self._wallet_ = wallet
        self._refund = refund

    @property
    def wallet(self) -> EcashWallet:
        if self._wallet_ is None or not self._wallet_.mints:
            raise Refusal(
                "cashu_unavailable", "this service takes no Cashu ecash", should_retry=False
            )
        return self._wallet_

    async def redeem(
        self, token: str, digest: str, min_sat: int, price: Msat, task_id: str, book: Booking
    ) -> Redeemed:
        """Redeem ``token`` (whose hash is ``digest``) for at least ``min_sat`` and ``book``
        it, in one turn of the wallet at its mint; a :class:`Refusal` otherwise."""
        wallet = self.wallet
        try:
            mint = wallet.screen(token, min_sat)  # in process: nothing written, nothing started
            if (gate := redeem_gate.get()) is not None:
                await gate()
            async with wallet.turn(mint) as at_mint:
                return await self._redeem_in_turn(at_mint, token, digest, min_sat, task_id, book)
        except EcashRefused as exc:
            raise self._refusal(exc, min_sat, price) from None

    async def _redeem_in_turn(
        self,
        at_mint: MintWallet,
        token: str,
        digest: str,
        min_sat: int,
        task_id: str,
        book: Booking,
    ) -> Redeemed:
        earlier = await self._intent(digest)
        state = "gone" if earlier is None else str(earlier["state"])
        if earlier is not None and state == "open":  # an earlier attempt's: settled first
            if (wait := _recheck_in(earlier)) > 0:
                raise _unknown(wait)
            state = await self._recover_in_turn(at_mint, digest)
        if state in ("open", "booked", "refunded", "spent_elsewhere"):
            raise _earlier(state)
        intent = {"state": "open", "task_id": task_id, "mint": at_mint.mint, "at": time.time()}
        async with self._ctx.store.transaction() as tx:
            await self._set_intent(tx, digest, intent)
        try:
            redeemed = await at_mint.redeem(token, min_sat)
        except (EcashRefused, EcashUnknown) as exc:
            if isinstance(exc, EcashRefused) and exc.extra.pop("swapped", None) is False:
                async with self._ctx.store.transaction() as tx:
                    await self._set_intent(tx, digest, {**intent, "state": "dropped"})
                raise
            # The swap may have happened: the mint says now, in this turn.
            raise _failed(exc, await self._recover_in_turn(at_mint, digest)) from None
        async with self._ctx.store.transaction() as tx:
            await book(tx, redeemed)
            await self._set_intent(tx, digest, {"state": "booked", "task_id": task_id})
        at_mint.forget(digest)  # booked: the swap's journal has served
        return redeemed

    async def recover(self, digest: str) -> str:
        """Resolve the open intent of the token whose hash is ``digest`` (if it was not
        asked about lately), in a turn of the wallet at its mint; the intent's state after
        (``gone`` when there is none)."""
        wallet = self._wallet_
        intent = await self._intent(digest) if wallet is not None else None
        if wallet is None or intent is None or intent["state"] != "open":
            return "gone" if intent is None else str(intent["state"])
        # The journal names the mint of an intent that does not (an older record).
        mint = intent.get("mint") or wallet.journaled_at(digest) or next(iter(wallet.mints), None)
        if _recheck_in(intent) > 0 or mint is None:
            return "open"
        try:
            async with wallet.turn(str(mint)) as at_mint:
                return await self._recover_in_turn(at_mint, digest)
        except EcashRefused as exc:
            log.warning("cashu intent %s: not resolved now: %s", digest[:12], exc)
            return "open"

    async def recover_all(self) -> None:
        """Resolve every open intent that was not asked about lately."""
        async with self._ctx.store.read() as tx:
            raw = await tx.get_value(_OPEN)
        for digest in json.loads(raw) if raw else ():
            try:
                await self.recover(digest)
            except Exception:  # one that fails every time must not keep the others waiting
                log.exception("cashu intent %s: recovery failed", digest[:12])

    async def sweep(self, every: float = 2 * RECHECK) -> None:
        """:meth:`recover_all` now (at start-up any open intent is a dead process's or a
        failure's) and every ``every`` seconds, until cancelled."""
        if self._wallet_ is None:
            return
        while True:
            try:
                await self.recover_all()
            except Exception:  # e.g. the database briefly gone: the next sweep tries again
                log.exception("sweeping open Cashu redeems failed")
            await asyncio.sleep(every)

    async def settled(self, digest: str) -> None:
        """Resolve the token's intent for its holder, or refuse while it cannot be."""
        if await self.recover(digest) == "open":
            async with self._ctx.store.read() as tx:
                raw = await tx.get_value(_intent_key(digest))
            raise _unknown(max(5, _recheck_in(json.loads(raw)) if raw else RECHECK))

    async def _recover_in_turn(self, at_mint: MintWallet, digest: str) -> str:
        intent = await self._intent(digest)
        if intent is None or intent["state"] != "open":
            return "gone" if intent is None else str(intent["state"])
        if _recheck_in(intent) > 0:  # asked lately (by one that held the turn before us)
            return "open"
        if not at_mint.journaled(digest):
            found = Recovered("none", None, 0, 0)  # never asked of the mint
        else:
            try:
                found = await at_mint.recover(digest)
            except (EcashRefused, EcashUnknown) as exc:
                log.warning("cashu intent %s: the wallet cannot tell yet: %s", digest[:12], exc)
                return await self._checked(digest, intent)
        # A swap sent before a failure may still land: unspent is final only long after.
        young = time.time() - float(intent.get("at", 0)) < 2 * at_mint.timeout
        if found.state not in ("redeemed", "none", "unspent", "spent_elsewhere") or (
            found.state == "unspent" and young
        ):
            log.warning("cashu intent %s stays open: %s", digest[:12], found.state)
            return await self._checked(digest, intent)
        async with self._ctx.store.transaction() as tx:
            raw = await tx.get_value(_intent_key(digest))
            if raw is None or json.loads(raw)["state"] != "open":
                return "gone" if raw is None else str(json.loads(raw)["state"])
            if found.state == "redeemed":
                await self._refund(tx, digest, str(intent["task_id"]), found)
                await self._set_intent(tx, digest, {**intent, "state": "refunded"})
                log.warning("cashu intent %s: swapped, not booked; refunded", digest[:12])
            else:
                await self._set_intent(tx, digest, {**intent, "state": "dropped"})
        at_mint.forget(digest)
        return {"redeemed": "refunded", "spent_elsewhere": "spent_elsewhere"}.get(
            found.state, "dropped"
        )

    async def _checked(self, digest: str, intent: dict[str, Any]) -> str:
        async with self._ctx.store.transaction() as tx:
            await self._set_intent(tx, digest, {**intent, "checked_at": time.time()})
        return "open"

    async def _set_intent(self, tx: KeysTx, digest: str, intent: dict[str, Any]) -> None:
        """Record an intent's state; one that came to nothing is deleted (it proves nothing)."""
        if intent["state"] == "dropped":
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

    def _refusal(self, exc: EcashRefused, min_sat: int, price: Msat) -> Refusal:
        kind = _REFUSED.get(exc.kind, "cashu_wallet_error")
        detail = exc.detail
        if kind == "cashu_wallet_error":  # the wallet's own words stay in the operator's log
            log.warning("the ecash wallet refused a token: %s", scrubbed(exc.detail))
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


def _recheck_in(intent: dict[str, Any]) -> float:
    """Seconds until an open intent may be asked about again (0: now)."""
    return max(0.0, float(intent.get("checked_at", 0)) + RECHECK - time.time())


def _unknown(retry_after: float) -> Refusal:
    return Refusal(
        "cashu_outcome_unknown",
        "the ecash wallet cannot tell yet whether the token was redeemed: keep it, do not "
        "spend it elsewhere, and ask for its change (GET /v1/cashu/change with it) later",
        retry_after=max(1, round(retry_after)),
        should_retry=False,
    )


def _earlier(state: str) -> Refusal:
    if state == "open":
        return _unknown(RECHECK)
    detail = {
        "refunded": "this token was redeemed for a request that did not run: its value is "
        "refunded, at GET /v1/cashu/change with this token in X-Cashu",
        "spent_elsewhere": "the token was spent elsewhere",
    }.get(state, "this token was redeemed here already")
    return Refusal("cashu_token_spent", detail, should_retry=False)


def _failed(exc: EcashRefused | EcashUnknown, state: str) -> Exception:
    """What a redeem that failed with its outcome open is answered with, once the mint was
    asked (``state``: its intent's after that)."""
    if state == "refunded":
        return Refusal(
            "cashu_refunded",
            "the token was redeemed but the request did not run: its value is refunded, at "
            "GET /v1/cashu/change with this token in X-Cashu",
            should_retry=False,
        )
    if state == "spent_elsewhere":
        return Refusal("cashu_token_spent", "the token was spent elsewhere", should_retry=False)
    if state == "open":
        return _unknown(RECHECK)
    if isinstance(exc, EcashRefused):
        return exc  # nothing redeemed: refused for the wallet's reason
    return Refusal(
        "cashu_wallet_unavailable",
        "the ecash wallet failed; nothing was redeemed: the token is still yours",
        retry_after=5,
    )
