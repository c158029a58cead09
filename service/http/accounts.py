"""Prepaid accounts: an API key (shown once, stored hashed), deposits by invoice, balance, and
withdrawals to the agent's own BOLT11 invoice."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from billing import budget, ledger
from billing.lightning import InvalidInvoice, LightningError, PaymentFailed, decode_invoice
from billing.money import Msat, Rounding
from billing.store import InvoiceRow

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
#: Routing fee limit when the agent does not name one: 1 % of the amount, at least 10 sat.
DEFAULT_FEE_PPM = 10_000
MIN_FEE_LIMIT = Msat(10_000)


@routes.post("/v1/accounts")
async def create_account(request: web.Request) -> web.Response:
    account_id = "acct_" + secrets.token_hex(10)
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    async with request.app[STORE].transaction() as tx:
        await tx.insert_api_account(account_id, key_hash(api_key), time.time())
    body = AccountCreated(id=account_id, api_key=api_key, balance_msat=0)
    return web.json_response(body.model_dump(), status=201)


@routes.get("/v1/accounts/me")
async def me(request: web.Request) -> web.Response:
    store = request.app[STORE]
    payer = await require_payer(request, store)
    engine = request.app[ENGINE]
    async with store.read() as tx:
        balance = await ledger.agent_balance(tx, payer)
        budgets = await budget.state(tx, engine.config.budgets, payer, time.time())
    view = AccountView(id=payer, balance_msat=balance.value, budgets=budgets)
    return web.json_response(view.model_dump())


@routes.post("/v1/accounts/deposits")
async def deposit(request: web.Request) -> web.Response:
    store, engine = request.app[STORE], request.app[ENGINE]
    payer = await require_payer(request, store)
    body = parse(DepositRequest, await read_json(request))
    amount = Msat.from_sat(body.amount_sat)
    try:
        invoice = await engine.lightning.create_invoice(
            amount, f"satrouter deposit {payer}", engine.config.invoice_expiry
        )
    except LightningError as exc:
        raise Problem(503, "lightning_unavailable", str(exc)) from None
    async with store.transaction() as tx:
        await tx.insert_invoice(
            InvoiceRow(
                invoice.payment_hash,
                invoice.bolt11,
                amount.value,
                "deposit",
                payer,
                "open",
                time.time(),
                invoice.expires_at,
            )
        )
    view = InvoiceView(
        payment_hash=invoice.payment_hash,
        bolt11=invoice.bolt11,
        amount_msat=amount.value,
        expires_at=invoice.expires_at,
    )
    return web.json_response(view.model_dump(), status=201)


@routes.post("/v1/accounts/withdrawals")
async def withdraw(request: web.Request) -> web.Response:
    store, engine = request.app[STORE], request.app[ENGINE]
    payer = await require_payer(request, store)
    body = parse(WithdrawalRequest, await read_json(request))
    try:
        decoded = decode_invoice(body.invoice)
    except InvalidInvoice as exc:
        raise Problem(400, "invalid_invoice", str(exc)) from None
    if decoded.amount is None:
        raise Problem(400, "invalid_invoice", "the invoice must name an amount")
    if decoded.expired():
        raise Problem(400, "invalid_invoice", "the invoice has expired")
    amount = decoded.amount
    fee_limit = (
        Msat(body.fee_limit_msat)
        if body.fee_limit_msat is not None
        else max(amount.mul_ratio(DEFAULT_FEE_PPM, 1_000_000, Rounding.UP), MIN_FEE_LIMIT)
    )
    ref = "wd_" + decoded.payment_hash[:24]
    try:
        async with store.transaction() as tx:
            posted = await ledger.post(tx, ledger.withdrawal_reserve(payer, ref, amount, fee_limit))
    except ledger.InsufficientFunds as exc:
        raise Problem(
            402,
            "insufficient_balance",
            f"withdrawing {amount.value} msat with a fee limit of {fee_limit.value} "
            f"msat needs {(amount + fee_limit).value} msat; the balance is "
            f"{exc.balance} msat",
        ) from None
    except ledger.IdempotencyConflict:
        raise Problem(
            409, "invoice_already_used", "this invoice was already withdrawn to"
        ) from None
    if not posted:  # this invoice's withdrawal is under way or done
        raise Problem(409, "invoice_already_used", "this invoice was already withdrawn to")
    try:
        payment = await engine.lightning.pay_invoice(body.invoice, fee_limit=fee_limit)
    except (PaymentFailed, InvalidInvoice, LightningError) as exc:
        async with store.transaction() as tx:
            await ledger.post(tx, ledger.withdrawal_failed(payer, ref, amount, fee_limit))
        raise Problem(502, "withdrawal_failed", f"the payment failed: {exc}") from None
    fee = min(payment.fee, fee_limit)
    async with store.transaction() as tx:
        await ledger.post(tx, ledger.withdrawal_paid(payer, ref, amount, fee_limit, fee))
        balance = await ledger.agent_balance(tx, payer)
    view = WithdrawalView(
        payment_hash=payment.payment_hash,
        amount_msat=amount.value,
        fee_msat=fee.value,
        preimage=payment.preimage,
        balance_msat=balance.value,
    )
    return web.json_response(view.model_dump())
