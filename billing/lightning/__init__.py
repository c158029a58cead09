"""Lightning backends: one async interface, two implementations (LNbits REST, LND gRPC).

A backend creates invoices, reports an invoice's status (with its preimage once settled), pays
invoices under a fee limit, decodes BOLT11 and yields *settlement hints*. A hint is only a reason
to look: :mod:`billing.lightning.settlement` confirms every hint with the backend's authenticated
status call before anything counts as paid.

An outgoing payment ends in one of three ways as far as a caller can know: it succeeded, it
failed for good (the backend says so, or refused it before anything left), or it is pending:
in flight, or the answer was lost. Pending is never a failure: a payment in flight can still
succeed, so the money it may spend stays reserved until the backend tells (see
:mod:`billing.payouts`).
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


class PaymentState(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # for good, per the backend: nothing left the wallet
    PENDING = "pending"  # in flight, or the backend could not tell: may still succeed


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    """What the backend knows of an outgoing payment."""

    payment_hash: str
    state: PaymentState
    #: What the route really cost, once succeeded.
    fee: Msat = Msat(0)  # noqa: RUF009 (immutable value)
    preimage: str | None = None  # hex, once succeeded
    reason: str = ""  # why it failed, or why it is not known yet

    @property
    def final(self) -> bool:
        return self.state is not PaymentState.PENDING


#: A hint: the payment hash that may have settled, or ``None`` after a (re)connect, meaning
#: "pushes may have been missed: re-check every open invoice".
Hint = str | None


class LightningBackend(Protocol):
    name: str

    async def create_invoice(self, amount: Msat, memo: str, expiry: int) -> CreatedInvoice: ...
    async def invoice_status(self, payment_hash: str) -> InvoiceStatus: ...
    def fee_floor(self, amount: Msat) -> Msat:
        """The least fee limit a payment of ``amount`` may be given: zero for a backend that
        enforces the limit itself; a backend that cannot (LNbits' API takes none) spends up to
        its own reserve, so a smaller limit would leave the difference to the operator."""

    async def wallet_balance(self) -> Msat:
        """What the wallet holds now, in msat (outgoing payments in flight already taken off).
        Raises :class:`LightningError` if the backend cannot tell right now."""

    def hints(self) -> AsyncIterator[Hint]: ...
    async def payment_status(self, payment_hash: str) -> PaymentOutcome | None:
        """The outgoing payment to ``payment_hash`` as the backend knows it now (never waiting
        for an in-flight payment to end); ``None`` if the backend holds no payment to it.
        Raises :class:`LightningError` if the backend cannot tell right now."""

    async def send_payment(
        self, bolt11: str, *, fee_limit: Msat, give_up_after: int = 60
    ) -> PaymentOutcome:
        """Pay ``bolt11``. Raises :class:`InvalidInvoice` for an invoice refused before sending;
        otherwise never raises for an outcome it does not know: that is ``PENDING``."""

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
    "PaymentOutcome",
    "PaymentState",
    "decode_invoice",
]
