"""L402 as the engine meets it: a credential that verified (:class:`L402Payment`) and the
challenge (an invoice and a macaroon bound to one request at its own quote) offered to a
request that is not paid for, or whose payment no longer covers it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from billing.lightning import decode_invoice
from billing.money import Msat

from .context import Context
from .offers import TOKEN_GRACE, Offer, memo, mint_gate
from .payments import Payments
from .quotes import Priced, Quoter, StoredQuote
from .refusals import Refusal
from .requests import ChatRequest


@dataclass(frozen=True, slots=True)
class L402Payment:
    """An L402 credential that verified: its token, the most its payment bought, the digest
    of this request, and whether the credential was minted for this very request (``bound``:
    it runs once; otherwise the request runs on the token's credit)."""

    token_id: str
    max_price: Msat
    digest: str
    bound: bool
    scheme: str = "l402"  # how it was presented: l402, mpp or x402

    @property
    def payer(self) -> str:
        return f"l402_{self.token_id}"

    @property
    def served(self) -> str:
        """Where the task that served the bound request is kept."""
        return f"l402:served:{self.token_id}"


class Challenger:
    def __init__(self, ctx: Context, quoter: Quoter, payments: Payments) -> None:
        self._ctx = ctx
        self._quoter = quoter
        self._payments = payments
        # The node's network and key, as its first invoice says: the same on every invoice
        # (decoding one costs ~4 ms, a tenth of a 402).
        self._node: tuple[str, str | None] | None = None

    async def challenge(
        self,
        request: ChatRequest,
        digest: str,
        *,
        priced: Priced | None = None,
        refused: Refusal | None = None,
    ) -> Refusal:
        """The offer for this request at its own quote: an invoice and a macaroon bound to
        it (which the L402, MPP and x402 challenges all carry), as the refusal to answer
        with. ``refused`` is why a credential sent with the request could not pay (kept as
        the refusal's kind)."""
        authority = self._ctx.l402
        assert authority is not None, "L402 needs the engine built with its authority"
        priced = priced or await self._quoter.price(request)
        total = priced.quote.total
        if (gate := mint_gate.get()) is not None:
            await gate()
        invoice = await self._payments.invoice(total, memo(digest))
        macaroon, token_id = await authority.mint(
            invoice.payment_hash,
            digest=digest,
            max_price=total,
            valid_for=self._ctx.config.invoice_expiry + TOKEN_GRACE,
        )
        if self._node is None:
            decoded = decode_invoice(invoice.bolt11)
            self._node = decoded.network, decoded.payee
        network, payee = self._node
        offer = Offer(
            token_id,
            macaroon,
            invoice.bolt11,
            invoice.payment_hash,
            invoice.amount,
            invoice.expires_at,
            digest,
            network,
            payee,
        )
        async with self._ctx.store.transaction() as tx:
            await tx.insert_invoice(
                self._payments.row(invoice, "l402", f"l402_{token_id}", time.time())
            )
        pay = (
            f"pay the invoice ({-(-total.value // 1000)} sat) and repeat the request with "
            "one of the offered credentials: Authorization: L402 <macaroon>:<preimage>, "
            "Authorization: Payment <credential> (MPP) or PAYMENT-SIGNATURE (x402)"
        )
        return Refusal(
            refused.kind if refused else "payment_required",
            f"{refused.detail}: {pay}" if refused else pay,
            extra={
                **(refused.extra if refused else {}),
                "price": StoredQuote.of(priced.quote),
                "invoice": invoice.bolt11,
                "macaroon": macaroon,
            },
            challenge=offer,
        )
