"""BOLT11 decoding with the maintained ``bolt11`` library, and the checks satrouter needs.

The library verifies the checksum and the signature (it recovers the payee from it); here a
decoded invoice is also checked against what was asked: the amount, and that it has not expired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import bolt11 as _bolt11

from ..money import Msat


class InvalidInvoice(ValueError):
    """Not a valid BOLT11 invoice, or not the one expected."""


@dataclass(frozen=True, slots=True)
class DecodedInvoice:
    payment_hash: str
    amount: Msat | None  # None for "any amount" invoices
    description: str | None
    timestamp: int
    expiry: int
    payee: str | None
    network: str

    @property
    def expires_at(self) -> int:
        return self.timestamp + self.expiry

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


_PREFIXES = (("lnbcrt", "regtest"), ("lntbs", "signet"), ("lntb", "testnet"), ("lnbc", "mainnet"))


def decode_invoice(bolt11: str) -> DecodedInvoice:
    """Decode and verify a BOLT11 string. Raises :class:`InvalidInvoice`."""
    text = bolt11.strip()
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:") :]
    if not text or len(text) > 7089:  # BOLT11 strings are bech32, at most ~7 kB in practice
        raise InvalidInvoice("not a BOLT11 invoice")
    try:
        decoded = _bolt11.decode(text)
    except Exception as exc:  # the library raises several exception types for bad input
        raise InvalidInvoice(f"not a valid BOLT11 invoice: {type(exc).__name__}") from None
    if not decoded.payment_hash:
        raise InvalidInvoice("invoice has no payment hash")
    network = next((n for p, n in _PREFIXES if text.lower().startswith(p)), "unknown")
    amount = decoded.amount_msat
    return DecodedInvoice(
        payment_hash=str(decoded.payment_hash),
        amount=Msat(int(amount)) if amount else None,
        description=decoded.description,
        timestamp=int(decoded.date),
        expiry=int(decoded.expiry or 3600),
        payee=decoded.payee,
        network=network,
    )


def check_invoice(
    bolt11: str, *, amount: Msat | None = None, payment_hash: str | None = None
) -> DecodedInvoice:
    """Decode and check that the invoice is for ``amount`` (and ``payment_hash``), unexpired."""
    decoded = decode_invoice(bolt11)
    if decoded.expired():
        raise InvalidInvoice("invoice has expired")
    if amount is not None and decoded.amount != amount:
        got = "any amount" if decoded.amount is None else str(decoded.amount)
        raise InvalidInvoice(f"invoice is for {got}, expected {amount}")
    if payment_hash is not None and decoded.payment_hash != payment_hash:
        raise InvalidInvoice("invoice payment hash does not match")
    return decoded
