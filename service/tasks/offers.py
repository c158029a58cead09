"""What a request that is not paid for is offered: one invoice for its quote and the L402
token minted for it. The L402, MPP (``Payment``) and x402 challenges are encodings of this one
offer, so paying any of them pays once, and each paid form runs as the token's bound payment.

Nothing more is kept per offer than the L402 challenge keeps (the invoice row, whose ``ref``
names the token, and the token's root key, both pruned with the unpaid invoice): MPP's
challenge is bound to its request by an HMAC, and the invoice's description names the digest of
the request it was issued for (what an x402 payment, which names only the invoice, is checked
against)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from billing.money import Msat

#: Awaited before an offer's invoice is minted, when set: the HTTP layer sets it for a request
#: presenting a paid form (L402, MPP, x402), which was not counted as asking for an invoice,
#: so that one ending in a fresh offer is held to the invoice limits (it raises to refuse).
mint_gate: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("mint_gate", default=None)

#: How long a token outlives its invoice: its change can be spent or withdrawn meanwhile.
TOKEN_GRACE = 86_400


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
    payee: str | None  # the node the invoice pays (its public key)


def memo(digest: str) -> str:
    """The description of an offer's invoice: it names the request it pays for."""
    return f"satrouter request {digest}"
