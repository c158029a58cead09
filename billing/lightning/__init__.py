"""Lightning backends: one async interface, two implementations (LNbits REST, LND gRPC).

A backend creates invoices, reports an invoice's status (with its preimage once settled), pays
invoices under a fee limit, decodes BOLT11 and yields *settlement hints*. A hint is only a reason
to look: :mod:`billing.lightning.settlement` confirms every hint with the backend's authenticated
status call before anything counts as paid.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..money import Msat
from .bolt11 import DecodedInvoice, InvalidInvoice, decode_invoice


class LightningError(Exception):
    """The backend failed or answered something unexpected."""


class PaymentFailed(LightningError):
    """An outgoing payment failed for good; nothing left the wallet."""


class InvoiceState(enum.StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    CANCELED = "canceled"
    ACCEPTED = "accepted"  # a hold invoice whose HTLCs are locked in


@dataclass(frozen=True, slots=True)
class CreatedInvoice:
    payment_hash: str  # hex
    bolt11: str
    amount: Msat
    expires_at: float


@dataclass(frozen=True, slots=True)
class InvoiceStatus:
    payment_hash: str
    state: InvoiceState
    amount_paid: Msat  # zero until settled
    preimage: str | None = None  # hex, only once settled
    settled_at: float | None = None

    @property
    def settled(self) -> bool:
        return self.state is InvoiceState.SETTLED


@dataclass(frozen=True, slots=True)
class Payment:
    payment_hash: str
    preimage: str
    amount: Msat
    fee: Msat


#: A hint: the payment hash that may have settled, or ``None`` after a (re)connect, meaning
#: "pushes may have been missed: re-check every open invoice".
Hint = str | None


class LightningBackend(Protocol):
    name: str

    async def create_invoice(self, amount: Msat, memo: str, expiry: int) -> CreatedInvoice: ...
    async def invoice_status(self, payment_hash: str) -> InvoiceStatus: ...
    async def wallet_balance(self) -> Msat:
        """What the wallet holds now, in msat (outgoing payments in flight already taken off).
        Raises :class:`LightningError` if the backend cannot tell right now."""

    def hints(self) -> AsyncIterator[Hint]: ...
    async def payment_status(self, payment_hash: str) -> Payment | None:
        """An outgoing payment: the payment if it succeeded, None if it did not (or is unknown).
        Raises :class:`LightningError` if the backend cannot tell right now."""

    async def pay_invoice(
        self, bolt11: str, *, fee_limit: Msat, give_up_after: int = 60
    ) -> Payment: ...
    async def close(self) -> None: ...


__all__ = [
    "CreatedInvoice",
    "DecodedInvoice",
    "Hint",
    "InvalidInvoice",
    "InvoiceState",
    "InvoiceStatus",
    "LightningBackend",
    "LightningError",
    "Payment",
    "PaymentFailed",
    "decode_invoice",
]
