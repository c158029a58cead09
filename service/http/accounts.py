"""Prepaid accounts: an API key (shown once, stored hashed), deposits by invoice, balance, and
withdrawals to the agent's own BOLT11 invoice (their life is :mod:`billing.payouts`: a payout
still in flight when the request's patience ends is answered 202 ``pending``, never failed)."""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from billing import payouts
from billing.money import Msat
from billing.payouts import PayoutRefused
from billing.store import PayoutRow

from .auth import API_KEY_PREFIX, key_hash, require_payer
from .keys import ENGINE, STORE
from .problems import Problem, read_json
from .schemas import (
    AccountCreated,
    AccountView,
    DepositRequest,
    InvoiceView,
    WithdrawalRequest,
    WithdrawalView,
    parse,
)

routes = web.RouteTableDef()


@routes.post("/v1/accounts")
async def create_account(request: web.Request) -> web.Response:
    account_id = "acct_" + secrets.token_hex(10)
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await request.app[ENGINE].open_account(account_id, key_hash(api_key))
    body = AccountCreated(id=account_id, api_key=api_key, balance_msat=0)
    return web.json_response(body.model_dump(), status=201)


@routes.get("/v1/accounts/me")
async def me(request: web.Request) -> web.Response:
    store = request.app[STORE]
    payer = await require_payer(request, store, expired_ok=True)
    balance, budgets = await request.app[ENGINE].account(payer)
    view = AccountView(id=payer, balance_msat=balance.value, budgets=budgets)
    return web.json_response(view.model_dump())


@routes.post("/v1/accounts/deposits")
async def deposit(request: web.Request) -> web.Response:
    store, engine = request.app[STORE], request.app[ENGINE]
    payer = await require_payer(request, store)
    body = parse(DepositRequest, await read_json(request))
    amount = Msat.from_sat(body.amount_sat)
    invoice = await engine.deposit(payer, amount)
    view = InvoiceView(
        payment_hash=invoice.payment_hash,
        bolt11=invoice.bolt11,
        amount_msat=amount.value,
        expires_at=invoice.expires_at,
    )
    return web.json_response(view.model_dump(), status=201)


@routes.post("/v1/accounts/withdrawals")
async def withdraw(request: web.Request) -> web.Response:
    store = request.app[STORE]
    payer = await require_payer(request, store, expired_ok=True)
    body = parse(WithdrawalRequest, await read_json(request))
    fee_limit = Msat(body.fee_limit_msat) if body.fee_limit_msat is not None else None
    try:
        payout = await request.app[ENGINE].withdraw(payer, body.invoice, fee_limit)
    except PayoutRefused as exc:
        status, kind = _REFUSALS[exc.kind]
        raise Problem(status, kind, exc.detail) from None
    view = await _view(request, payout)
    if view.status == "failed":
        raise Problem(
            502,
            "withdrawal_failed",
            f"the payment failed ({payout.error}); the amount is back in the balance",
            extra={"withdrawal": view.model_dump()},
        )
    if view.status == "pending":  # in flight or not known yet: never a failure
        return web.json_response(
            view.model_dump(), status=202, headers={"Location": _location(payout.payment_hash)}
        )
    return web.json_response(view.model_dump())


@routes.get("/v1/accounts/withdrawals/{payment_hash}")
async def withdrawal(request: web.Request) -> web.Response:
    store = request.app[STORE]
    payer = await require_payer(request, store, expired_ok=True)
    payment_hash = request.match_info["payment_hash"]
    if not _HASH.fullmatch(payment_hash):
        raise Problem(400, "invalid_payment_hash", "a payment hash is 64 lowercase hex digits")
    payout = await request.app[ENGINE].withdrawal(payment_hash)
    if payout is None or payout.agent != payer:
        raise Problem(404, "not_found", "no withdrawal of this account pays that hash")
    return web.json_response((await _view(request, payout)).model_dump())


_HASH = re.compile(r"[0-9a-f]{64}")
_REFUSALS = {
    "invalid_invoice": (400, "invalid_invoice"),
    "own_invoice": (422, "own_invoice"),
    "invoice_already_used": (409, "invoice_already_used"),
    # Not 402: that answer promises a challenge to pay, and a withdrawal has nothing to buy.
    "insufficient": (409, "insufficient_balance"),
    "fee_limit_too_low": (400, "fee_limit_too_low"),
}
_STATUS = {
    payouts.State.RESERVED: "pending",
    payouts.State.IN_FLIGHT: "pending",
    payouts.State.SUCCEEDED: "succeeded",
    payouts.State.FAILED: "failed",
}


def _location(payment_hash: str) -> str:
    return f"/v1/accounts/withdrawals/{payment_hash}"


async def _view(request: web.Request, payout: PayoutRow) -> WithdrawalView:
    balance = await request.app[ENGINE].balance(payout.agent)
    return WithdrawalView(
        payment_hash=payout.payment_hash,
        status=_STATUS[payouts.State(payout.state)],
        amount_msat=payout.amount_msat,
        fee_limit_msat=payout.fee_limit_msat,
        fee_msat=None if payout.fee_msat is None else min(payout.fee_msat, payout.fee_limit_msat),
        preimage=payout.preimage,
        error=payout.error,
        balance_msat=balance.value,
        created_at=payout.created_at,
        updated_at=payout.updated_at,
    )
