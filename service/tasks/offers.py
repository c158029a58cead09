"""What a request that is not paid for is offered: one invoice for its quote and the L402
token minted for it. The L402, MPP (``Payment``) and x402 challenges are encodings of this one
offer, so paying any of them pays once, and each paid form runs as the token's bound payment.

Each offer is also kept (``offer:<payment hash>``) with the token and the request digest it is
for: MPP and x402 credentials name the invoice, not the token, and are checked against it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from billing.money import Msat
from billing.store import Tx

#: The ways a bound payment can be presented; one payment is served under one of them only.
SCHEMES = ("l402", "mpp", "x402")


@dataclass(frozen=True, slots=True)
class Offer:
    token_id: str
    macaroon: str
    bolt11: str
    payment_hash: str
    amount: Msat
    expires_at: float
    digest: str  # hex sha256 of the request body it is for
    network: str  # of the invoice: mainnet, testnet, signet, regtest

    @property
    def key(self) -> str:
        return offer_key(self.payment_hash)

    def record(self) -> str:
        return json.dumps(
            {
                "token_id": self.token_id,
                "macaroon": self.macaroon,
                "digest": self.digest,
                "max_price_msat": self.amount.value,
            }
        )


@dataclass(frozen=True, slots=True)
class KeptOffer:
    """An offer as kept: whose token it is, for which request, at what price."""

    token_id: str
    macaroon: str
    digest: str
    max_price: Msat


def offer_key(payment_hash: str) -> str:
    return f"offer:{payment_hash}"


async def kept_offer(tx: Tx, payment_hash: str) -> KeptOffer | None:
    raw = await tx.get_value(offer_key(payment_hash))
    if raw is None:
        return None
    data = json.loads(raw)
    return KeptOffer(
        str(data["token_id"]),
        str(data["macaroon"]),
        str(data["digest"]),
        Msat(int(data["max_price_msat"])),
    )
