"""LNbits over its REST API and wallet websocket.

- Invoices are created with the invoice key (``POST /api/v1/payments``, amount in whole sats)
  and checked after decoding: the amount and payment hash must be what was asked.
- Status is ``GET /api/v1/payments/<hash>`` with the wallet's key: LNbits only answers for
  payments of that wallet. ``details.preimage`` is present even while unpaid (it is the
  invoice's own preimage), so a preimage is reported only for a settled invoice, and the
  create response's preimage never leaves this module.
- Hints come from ``/api/v1/ws/<invoice key>``. Anyone can post to that socket, so a message only
  names a payment hash to check. The socket reconnects with backoff, and every (re)connect yields
  ``None``: re-check all open invoices.
- Payments go out with the admin key. LNbits' API takes no fee limit (only its instance-wide
  fee reserve), so the fee it reports is what the route cost, whatever the limit; the caller
  books it as paid (:func:`billing.ledger.withdrawal_paid`).
- A pay call's answer decides nothing alone: after it (answered, refused, timed out or dropped)
  the payment is looked up by hash. Only LNbits' record, or a refusal with no record, is final;
  anything else is pending. LNbits itself answers "pending" for a payment still in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from ..money import Msat, Rounding
from . import (
    CreatedInvoice,
    Hint,
    InvoiceState,
    InvoiceStatus,
    LightningError,
    PaymentOutcome,
    PaymentState,
)
from .bolt11 import InvalidInvoice, check_invoice, decode_invoice

log = logging.getLogger(__name__)


class _Refused(LightningError):
    """LNbits answered and refused: a client error, or a payment error it marks ``failed``."""


#: LNbits' default fee reserve for outgoing payments (``LNBITS_RESERVE_FEE_MIN`` msat and
#: ``LNBITS_RESERVE_FEE_PERCENT``): what it may spend on routing whatever the caller wanted.
RESERVE_FEE_MIN = 2000
RESERVE_FEE_PPM = 10_000


class LnbitsBackend:
    name = "lnbits"

    def __init__(
        self,
        url: str,
        *,
        invoice_key: str,
        admin_key: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._url = url.rstrip("/")
        self._invoice_key = invoice_key
        self._admin_key = admin_key
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_backoff = max_backoff

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"LnbitsBackend({self._url!r})"

    async def close(self) -> None:
        if self._own_session:
            await self._session.close()

    async def _call(self, method: str, path: str, key: str, body: Any = None) -> Any:
        try:
            async with self._session.request(
                method,
                self._url + path,
                json=body,
                headers={"X-Api-Key": key},
                timeout=self._timeout,
            ) as response:
                text = await response.text()
                try:
                    data = json.loads(text) if text else {}
                except json.JSONDecodeError:
                    data = {"detail": text[:200]}
                if response.status >= 400:
                    detail = data.get("detail") if isinstance(data, Mapping) else None
                    message = (
                        f"LNbits {method} {path.split('/')[3]}: "
                        f"HTTP {response.status}: {detail or 'error'}"
                    )
                    # 520 is LNbits' payment error; its `status` says whether it is final.
                    said = data.get("status") if isinstance(data, Mapping) else None
                    if response.status < 500 or (response.status == 520 and said == "failed"):
                        raise _Refused(message)
                    raise LightningError(message)
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LightningError(f"LNbits unreachable: {type(exc).__name__}") from exc

    async def create_invoice(self, amount: Msat, memo: str, expiry: int) -> CreatedInvoice:
        if amount.value <= 0 or amount.value % 1000:
            raise ValueError("LNbits invoices are in whole sats: amount must be a multiple of 1000")
        data = await self._call(
            "POST",
            "/api/v1/payments",
            self._invoice_key,
            {"out": False, "amount": amount.to_sat(Rounding.UP), "memo": memo, "expiry": expiry},
        )
        bolt11 = data.get("bolt11") or data.get("payment_request")
        payment_hash = data.get("payment_hash")
        if not isinstance(bolt11, str) or not isinstance(payment_hash, str):
            raise LightningError("LNbits answered without an invoice")
        try:
            decoded = check_invoice(bolt11, amount=amount, payment_hash=payment_hash)
        except InvalidInvoice as exc:
            raise LightningError(f"LNbits returned another invoice than asked: {exc}") from None
        # `data` also carries the preimage: it is dropped here, on purpose.
        return CreatedInvoice(payment_hash, bolt11, amount, float(decoded.expires_at))

    async def invoice_status(self, payment_hash: str) -> InvoiceStatus:
        _check_hash(payment_hash)
        data = await self._call("GET", f"/api/v1/payments/{payment_hash}", self._invoice_key)
        details = data.get("details") if isinstance(data, Mapping) else None
        details = details if isinstance(details, Mapping) else {}
        amount = details.get("amount")
        if (
            isinstance(amount, int)
            and amount > 0  # an incoming payment
            and data.get("paid") is True
            and details.get("payment_hash") == payment_hash
        ):
            preimage = data.get("preimage") or details.get("preimage")
            return InvoiceStatus(
                payment_hash,
                InvoiceState.SETTLED,
                Msat(amount),
                preimage=str(preimage) if preimage else None,
                settled_at=time.time(),
            )
        status = str(data.get("status") or details.get("status") or "pending")
        state = InvoiceState.CANCELED if status in ("failed", "expired") else InvoiceState.OPEN
        return InvoiceStatus(payment_hash, state, Msat(0))

    def fee_floor(self, amount: Msat) -> Msat:
        # LNbits reserves max(2 sat, 1 %) for routing fees by default and pays up to that.
        return max(Msat(RESERVE_FEE_MIN), amount.mul_ratio(RESERVE_FEE_PPM, 1_000_000, Rounding.UP))

    async def wallet_balance(self) -> Msat:
        data = await self._call("GET", "/api/v1/wallet", self._invoice_key)
        balance = data.get("balance") if isinstance(data, Mapping) else None
        if not isinstance(balance, int) or isinstance(balance, bool):
            raise LightningError("LNbits answered without a wallet balance")
        return Msat(balance)  # LNbits reports msat, less outgoing payments still pending

    async def hints(self) -> AsyncIterator[Hint]:
        url = self._url.replace("http", "ws", 1) + f"/api/v1/ws/{self._invoice_key}"
        delay = 0.5
        while True:
            try:
                async with self._session.ws_connect(url, heartbeat=30) as ws:
                    delay = 0.5
                    yield None  # connected: anything pushed while away was missed
                    async for message in ws:
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            break
                        payment_hash = _hash_from_push(message.data)
                        if payment_hash is not None:
                            yield payment_hash
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "LNbits websocket lost (%s); reconnecting in %.1f s", type(exc).__name__, delay
                )
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._max_backoff)

    async def payment_status(self, payment_hash: str) -> PaymentOutcome | None:
        _check_hash(payment_hash)
        if self._admin_key is None:
            raise LightningError("checking payments needs LNBITS_ADMIN_KEY")
        try:
            data = await self._call("GET", f"/api/v1/payments/{payment_hash}", self._admin_key)
        except _Refused as exc:
            if "HTTP 404" in str(exc):
                return None
            raise LightningError(str(exc)) from None
        details = data.get("details") if isinstance(data, Mapping) else None
        details = details if isinstance(details, Mapping) else {}
        amount = details.get("amount")
        if (
            not isinstance(amount, int)
            or amount >= 0
            or details.get("payment_hash") != payment_hash
        ):
            return None  # this wallet sent nothing to that hash (its own invoice, if anything)
        status = str(data.get("status") or details.get("status") or "")
        if data.get("paid") is True and data.get("preimage"):
            return PaymentOutcome(
                payment_hash,
                PaymentState.SUCCEEDED,
                fee=Msat(abs(int(details.get("fee") or 0))),
                preimage=str(data["preimage"]),
            )
        if status == "failed":
            return PaymentOutcome(payment_hash, PaymentState.FAILED, reason="LNbits: failed")
        return PaymentOutcome(payment_hash, PaymentState.PENDING, reason=f"LNbits: {status}")

    async def send_payment(
        self, bolt11: str, *, fee_limit: Msat, give_up_after: int = 60
    ) -> PaymentOutcome:
        if self._admin_key is None:
            raise LightningError("paying needs LNBITS_ADMIN_KEY")
        decoded = decode_invoice(bolt11)
        if decoded.amount is None:
            raise InvalidInvoice("refusing to pay an invoice without an amount")
        if decoded.expired():
            raise InvalidInvoice("invoice has expired")
        refused: str | None = None
        try:
            await self._call(
                "POST", "/api/v1/payments", self._admin_key, {"out": True, "bolt11": bolt11}
            )
        except _Refused as exc:
            refused = str(exc)
        except LightningError as exc:  # no answer, or an ambiguous one: LNbits may be paying
            log.warning("LNbits pay %s: %s; asking its status", decoded.payment_hash[:16], exc)
        try:
            known = await self.payment_status(decoded.payment_hash)
        except LightningError as exc:
            return PaymentOutcome(decoded.payment_hash, PaymentState.PENDING, reason=str(exc))
        if known is not None:
            if known.state is PaymentState.SUCCEEDED and known.fee > fee_limit:
                log.error("LNbits charged a fee of %s, over the limit %s", known.fee, fee_limit)
            return known
        if refused is not None:  # refused, and nothing of this wallet's went out
            return PaymentOutcome(decoded.payment_hash, PaymentState.FAILED, reason=refused)
        return PaymentOutcome(
            decoded.payment_hash, PaymentState.PENDING, reason="LNbits has no record yet"
        )


def _check_hash(payment_hash: str) -> None:
    if len(payment_hash) != 64 or any(c not in "0123456789abcdef" for c in payment_hash):
        raise ValueError("payment hash must be 64 lowercase hex characters")


def _hash_from_push(text: str) -> str | None:
    """The payment hash a websocket message names, if it looks like an incoming payment."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return None
    payment = message.get("payment") if isinstance(message, dict) else None
    if not isinstance(payment, dict):
        return None
    payment_hash = payment.get("payment_hash")
    amount = payment.get("amount")
    if not isinstance(payment_hash, str) or not isinstance(amount, int) or amount <= 0:
        return None
    return payment_hash.lower()
