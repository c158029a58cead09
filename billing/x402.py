"""x402 version 2 with the ``exact`` scheme on Lightning: the headers and their JSON.

- ``PAYMENT-REQUIRED`` (with the 402): base64 JSON ``{x402Version: 2, error, resource,
  accepts: [requirements]}``; the Lightning entry has the network of its invoice
  (``bip122:000000000019d6689c085ae165831e93`` on mainnet, the testnet id otherwise), ``payTo``
  ``"anonymous"``, ``amount`` in msat (as the invoice says it),
  ``extra: {paymentMethod: "lightning", invoice, paymentHash}``.
- ``PAYMENT-SIGNATURE`` (the client's retry): base64 JSON ``{x402Version: 2, scheme, network,
  payload: {invoice}, accepted}``. The payload names the invoice that was paid, not a proof:
  the server confirms with its own Lightning backend that it is settled, and
  ``accepted.extra.invoice`` must be that same invoice (no substitution).
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
#: The id the scheme gives Bitcoin's testnet: what an invoice of any other network is offered on.
TESTNET = "bip122:000000000933ea01ad0ee984209779ba"
#: The scheme's ``payTo``: a Lightning invoice names its own payee.
PAY_TO = "anonymous"
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
    network: str


def _encode(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def network_id(invoice_network: str) -> str:
    """The scheme's network id of an invoice's network (``mainnet``, ``testnet``, ...)."""
    return NETWORK if invoice_network == "mainnet" else TESTNET


def requirements(
    *, amount_msat: int, invoice: str, payment_hash: str, network: str, timeout: int
) -> dict[str, Any]:
    """The ``accepts`` entry for one invoice (``network``: the invoice's, as decoded)."""
    return {
        "scheme": SCHEME,
        "network": network_id(network),
        "amount": str(amount_msat),
        "asset": "BTC",
        "payTo": PAY_TO,
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
    if scheme != SCHEME or network not in (NETWORK, TESTNET):
        raise X402Error("malformed", f"only scheme {SCHEME!r} on Bitcoin (Lightning) is taken")
    payload = data.get("payload")
    invoice = payload.get("invoice") if isinstance(payload, dict) else None
    if not isinstance(invoice, str) or not invoice:
        raise X402Error("malformed", "payload.invoice (the BOLT11 invoice paid) is missing")
    extra = accepted.get("extra") if isinstance(accepted, dict) else None
    if not isinstance(extra, dict) or extra.get("invoice") != invoice:
        # the scheme's step 4: the requirements accepted must name the invoice presented
        raise X402Error("malformed", "payload.invoice is not accepted.extra.invoice")
    return Signature(invoice.strip(), network)


def payment_response(payment_hash: str, network: str) -> str:
    """The ``PAYMENT-RESPONSE`` value of a request paid by ``payment_hash``'s invoice
    (``network``: the invoice's, as decoded)."""
    return _encode({"success": True, "transaction": payment_hash, "network": network_id(network)})
