"""x402 version 2 with the ``exact`` scheme on Lightning: the headers and their JSON.

- ``PAYMENT-REQUIRED`` (with the 402): base64 JSON ``{x402Version: 2, error, resource,
  accepts: [requirements]}``; the Lightning entry has network
  ``bip122:000000000019d6689c085ae165831e93``, ``amount`` in msat (as the invoice says it),
  ``extra: {paymentMethod: "lightning", invoice, paymentHash}``.
- ``PAYMENT-SIGNATURE`` (the client's retry): base64 JSON ``{x402Version: 2, scheme, network,
  payload: {invoice}, accepted}``. The payload names the invoice that was paid, not a proof:
  the server confirms with its own Lightning backend that it is settled.
- ``PAYMENT-RESPONSE`` (with the answer): base64 JSON ``{success, transaction, network}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json

VERSION = 2
SCHEME = "exact"
#: CAIP-2 id of Bitcoin (its genesis block), as the Lightning variant of ``exact`` names it.
NETWORK = "bip122:000000000019d6689c085ae165831e93"
#: A payment header longer than this is refused before it is decoded.
MAX_HEADER = 16_384


class X402Error(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Signature:
    invoice: str


def _encode(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def requirements(
    *, amount_msat: int, invoice: str, payment_hash: str, pay_to: str, timeout: int
) -> dict[str, Any]:
    """The ``accepts`` entry for one invoice."""
    return {
        "scheme": SCHEME,
        "network": NETWORK,
        "amount": str(amount_msat),
        "asset": "BTC",
        "payTo": pay_to,
        "maxTimeoutSeconds": timeout,
        "extra": {"paymentMethod": "lightning", "invoice": invoice, "paymentHash": payment_hash},
    }


def payment_required(
    accepts: list[dict[str, Any]], *, url: str, description: str, error: str
) -> tuple[str, dict[str, Any]]:
    """The ``PAYMENT-REQUIRED`` value and the JSON it encodes."""
    body = {
        "x402Version": VERSION,
        "error": error,
        "resource": {"url": url, "description": description, "mimeType": "application/json"},
        "accepts": accepts,
    }
    return _encode(body), body


def parse_signature(header: str) -> Signature:
    """A ``PAYMENT-SIGNATURE`` value -> the invoice it names; :class:`X402Error`."""
    text = header.strip()
    if not text or len(text) > MAX_HEADER:
        raise X402Error("malformed", "PAYMENT-SIGNATURE is empty or too long")
    try:
        # pydantic-core refuses nesting past 200 levels (json.loads recursed until it crashed)
        data = from_json(base64.b64decode(text + "=" * (-len(text) % 4), validate=False))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise X402Error("malformed", "PAYMENT-SIGNATURE is not base64 JSON") from None
    if not isinstance(data, dict):
        raise X402Error("malformed", "PAYMENT-SIGNATURE is not a JSON object")
    if data.get("x402Version") != VERSION:
        raise X402Error("malformed", f"x402Version must be {VERSION}")
    accepted = data.get("accepted")
    scheme = data.get("scheme") or (accepted.get("scheme") if isinstance(accepted, dict) else None)
    network = data.get("network") or (
        accepted.get("network") if isinstance(accepted, dict) else None
    )
    if scheme != SCHEME or network != NETWORK:
        raise X402Error("malformed", f"only scheme {SCHEME!r} on {NETWORK} (Lightning) is taken")
    payload = data.get("payload")
    invoice = payload.get("invoice") if isinstance(payload, dict) else None
    if not isinstance(invoice, str) or not invoice:
        raise X402Error("malformed", "payload.invoice (the BOLT11 invoice paid) is missing")
    return Signature(invoice.strip())


def payment_response(payment_hash: str) -> str:
    """The ``PAYMENT-RESPONSE`` value of a request paid by ``payment_hash``'s invoice."""
    return _encode({"success": True, "transaction": payment_hash, "network": NETWORK})
