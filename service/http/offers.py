"""The offers of a 402 and the paid forms that answer them, on ``/v1/chat/completions``.

One offer (an invoice for the request's quote and the L402 token minted for it, see
:mod:`service.tasks.offers`) is shown three ways, in this order:

1. ``WWW-Authenticate: LSAT ...`` then ``L402 macaroon="...", invoice="..."`` (``lnget`` reads
   only the first value);
2. ``WWW-Authenticate: Payment ... method="lightning", intent="charge"`` (MPP);
3. ``PAYMENT-REQUIRED`` (x402 v2, ``exact`` on Lightning).

The problem body lists the same ``offers`` beside the ``price``. Whichever is paid, the request
runs as the token's bound payment, exactly once: an MPP credential (``Authorization: Payment``)
or an x402 ``PAYMENT-SIGNATURE`` becomes the same ``L402Payment`` an L402 credential does, and
the change is credit on that token (payer ``l402_<token>``), read and withdrawn with
``Authorization: L402 <macaroon>:<preimage>``; MPP's ``Payment-Receipt`` carries the macaroon,
and so does the problem body of an error answer to a paid form (``credit_macaroon``: a refund,
or a payment a risen price left unspent). Receipts go only with a 2xx.

A paid form the service cannot take gets a fresh offer, as any 402; the invoice it mints is
counted against the invoice limits of anonymous requests (see :data:`..tasks.offers.mint_gate`).

x402 on Lightning names the paid invoice, which is no secret (it is in the 402 and with every
wallet that paid it): whoever presents a paid invoice first gets its answer, as the scheme has
it. The preimage is the stronger proof: L402 or MPP with it always gets the stored answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from billing import mpp, x402
from billing.l402 import L402Error, request_digest
from billing.lightning import InvalidInvoice, decode_invoice
from billing.money import Msat
from billing.mpp import MppError
from billing.store import InvoiceRow
from billing.x402 import X402Error

from ..tasks.engine import Engine, L402Payment
from ..tasks.offers import TOKEN_GRACE, Offer, memo
from ..tasks.refusals import Refusal
from .keys import L402, STORE
from .problems import Problem

DESCRIPTION = "satrouter chat completion"


async def show(request: web.Request, problem: Problem, offer: Offer, raw: bytes) -> Problem:
    """``problem`` (a 402 with the L402 challenge) with the MPP and x402 offers added."""
    secret = await mpp.server_secret(request.app[STORE])
    charge = mpp.charge_request(
        amount_msat=offer.amount.value,
        invoice=offer.bolt11,
        payment_hash=offer.payment_hash,
        network=offer.network,
        description=DESCRIPTION,
    )
    payment, echo = mpp.challenge(secret, request=charge, expires_at=offer.expires_at, body=raw)
    problem.header_lists.setdefault("WWW-Authenticate", []).append(payment)
    accepts = x402.requirements(
        amount_msat=offer.amount.value,
        invoice=offer.bolt11,
        payment_hash=offer.payment_hash,
        network=offer.network,
        timeout=max(1, int(offer.expires_at - time.time())),
    )
    required, required_json = x402.payment_required(
        [accepts], url=str(request.url), description=DESCRIPTION, error=problem.detail
    )
    problem.headers["PAYMENT-REQUIRED"] = required
    offers: list[dict[str, Any]] = [
        {"scheme": "L402", "macaroon": offer.macaroon, "invoice": offer.bolt11},
        {
            "scheme": "Payment",
            "id": echo.id,
            "realm": echo.realm,
            "method": echo.method,
            "intent": echo.intent,
            "request": echo.request,
            "expires": echo.expires,
            "digest": echo.digest,
        },
        {"scheme": "x402", **required_json},
    ]
    problem.extra["offers"] = offers
    return problem


async def _offered(request: web.Request, payment_hash: str, bolt11: str) -> InvoiceRow | None:
    """The invoice row of an offer made here, if ``bolt11`` is that offer's invoice."""
    async with request.app[STORE].read() as tx:
        row = await tx.invoice(payment_hash)
    if row is None or row.purpose != "l402" or row.bolt11 != bolt11:
        return None
    return row


def _paid(row: InvoiceRow, digest: str, scheme: str) -> L402Payment:
    """The offer's token as the bound payment of this request."""
    token_id = row.ref.removeprefix("l402_")
    return L402Payment(token_id, Msat(row.amount_msat), digest, bound=True, scheme=scheme)


@dataclass(frozen=True, slots=True)
class Presented:
    """A paid form that verified: the bound payment, the headers of its answer (sent only
    with a 2xx: receipts), and the token's L402 macaroon, which with the invoice's preimage
    reads and withdraws its credit (change, a refund, a payment a risen price left)."""

    paid: L402Payment
    headers: dict[str, str]
    macaroon: str


async def _macaroon(request: web.Request, paid: L402Payment, row: InvoiceRow) -> str | None:
    """The L402 macaroon of the token an offer minted, or None if the token is gone."""
    try:
        return await request.app[L402].reissue(
            row.payment_hash,
            paid.token_id,
            digest=paid.digest,
            max_price=paid.max_price,
            valid_until=int(row.expires_at) + TOKEN_GRACE,
        )
    except L402Error:
        return None


async def mpp_payment(request: web.Request, engine: Engine, raw: bytes) -> Presented:
    """A verified ``Authorization: Payment`` credential as the bound payment it is, and the
    headers of its answer (``Payment-Receipt``). Refused (a fresh offer, as any 402) if it is
    malformed, not issued here for this request, expired, or unpaid."""
    digest = request_digest(raw)
    try:
        credential = mpp.parse_credential(request.headers["Authorization"])
        # the HMAC binds the challenge (its invoice) to the digest of the body presented
        mpp.verify(await mpp.server_secret(request.app[STORE]), credential, body=raw)
        row = await _offered(request, credential.payment_hash, credential.invoice)
        if row is None:
            raise MppError("invalid_challenge", "no such offer")
        if not await engine.confirm(credential.payment_hash):
            raise MppError("unpaid", "the invoice of this challenge is not settled")
        paid = _paid(row, digest, "mpp")
        macaroon = await _macaroon(request, paid, row)
        if macaroon is None:
            raise MppError("invalid_challenge", "the token of this offer is gone")
    except MppError as exc:
        if exc.reason == "unpaid":
            raise Refusal(
                "mpp_unpaid",
                f"{exc.detail}; its settlement may not be confirmed yet: retry shortly",
                retry_after=1,
            ) from None
        raise Refusal(f"mpp_{exc.reason}", exc.detail) from None
    receipt = mpp.receipt(row.payment_hash, credential.challenge.id, {"macaroon": macaroon})
    return Presented(paid, {"Payment-Receipt": receipt}, macaroon)


async def x402_payment(request: web.Request, engine: Engine, raw: bytes) -> Presented:
    """A ``PAYMENT-SIGNATURE`` naming an invoice offered here for this request and settled,
    as the bound payment it is, and the headers of its answer (``PAYMENT-RESPONSE``)."""
    digest = request_digest(raw)
    try:
        signature = x402.parse_signature(request.headers["PAYMENT-SIGNATURE"])
        try:
            decoded = decode_invoice(signature.invoice)
        except InvalidInvoice as exc:
            raise X402Error("malformed", str(exc)) from None
        if x402.network_id(decoded.network) != signature.network:
            raise X402Error("malformed", "the network named is not the invoice's")
        if decoded.expired():  # the scheme's step 7
            raise X402Error("expired", "this invoice has expired")
        row = await _offered(request, decoded.payment_hash, signature.invoice)
        if row is None:
            raise X402Error("unknown_invoice", "this invoice was not offered here")
        if decoded.description != memo(digest):
            raise X402Error("wrong_request", "this invoice was issued for another request")
        if not await engine.confirm(row.payment_hash):
            raise X402Error("unpaid", "this invoice is not settled")
        paid = _paid(row, digest, "x402")
        macaroon = await _macaroon(request, paid, row)
        if macaroon is None:
            raise X402Error("unknown_invoice", "the token of this offer is gone")
    except X402Error as exc:
        if exc.reason == "malformed":
            raise Problem(400, "x402_malformed", exc.detail) from None
        # x402 answers a payment it cannot take with a fresh PAYMENT-REQUIRED
        raise Refusal(f"x402_{exc.reason}", exc.detail) from None
    answer = x402.payment_response(row.payment_hash, decoded.network)
    return Presented(paid, {"PAYMENT-RESPONSE": answer}, macaroon)
