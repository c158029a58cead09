"""The payment schemes the service accepts: one registry, read by the agent card (and open to
the 402 code).

A scheme added here (as the code that takes it is merged) shows up in
``/.well-known/agent-card.json`` without another edit, so the card cannot promise a scheme the
service does not take, nor miss one it does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaymentScheme:
    """How an agent pays: what it sends, on which paths, in what unit."""

    id: str
    name: str
    description: str
    #: The OpenAPI security scheme that carries the credential (``None``: no credential).
    security_scheme: str | None
    #: The operations (``"POST /v1/tasks"``) that take this scheme.
    operations: tuple[str, ...]
    unit: str = "msat"
    #: The setting that turns the scheme on (``None``: always on), e.g. the allowed mints.
    enabled_by: str | None = None


#: In the order a client should prefer them. Extend with :func:`register`.
PAYMENT_SCHEMES: dict[str, PaymentScheme] = {}


def register(scheme: PaymentScheme) -> PaymentScheme:
    if scheme.id in PAYMENT_SCHEMES:
        raise ValueError(f"payment scheme {scheme.id!r} is registered twice")
    PAYMENT_SCHEMES[scheme.id] = scheme
    return scheme


L402_SCHEME = register(
    PaymentScheme(
        id="l402",
        name="L402",
        description=(
            "Call without credentials, get 402 with WWW-Authenticate: L402 macaroon and "
            "invoice; pay the invoice, retry with Authorization: L402 <macaroon>:<preimage>"
        ),
        security_scheme="l402",
        operations=("POST /v1/chat/completions",),
    )
)
MPP_SCHEME = register(
    PaymentScheme(
        id="mpp",
        name="MPP Payment (lightning, charge)",
        description=(
            'The same 402 carries WWW-Authenticate: Payment method="lightning" '
            'intent="charge" for the same invoice; pay it, retry with Authorization: '
            "Payment <base64url credential>; the answer carries Payment-Receipt"
        ),
        security_scheme="mpp",
        operations=("POST /v1/chat/completions",),
    )
)
X402_SCHEME = register(
    PaymentScheme(
        id="x402",
        name="x402 v2 exact (Lightning)",
        description=(
            "The same 402 carries PAYMENT-REQUIRED with an exact entry on bip122 naming the "
            "same invoice; pay it, retry with PAYMENT-SIGNATURE naming it; the answer carries "
            "PAYMENT-RESPONSE"
        ),
        security_scheme="x402",
        operations=("POST /v1/chat/completions",),
    )
)
TASK_INVOICE_SCHEME = register(
    PaymentScheme(
        id="lightning-invoice",
        name="Task invoice (BOLT11)",
        description=(
            "POST /v1/tasks answers with a BOLT11 invoice for the quoted price; the task runs "
            "once it is paid and the change is returned"
        ),
        security_scheme=None,
        operations=("POST /v1/tasks",),
    )
)
PREPAID_SCHEME = register(
    PaymentScheme(
        id="prepaid-key",
        name="Prepaid API key",
        description=(
            "POST /v1/accounts makes an API key; deposits by Lightning invoice credit it and "
            "each call is charged from its balance"
        ),
        security_scheme="bearer",
        operations=("POST /v1/chat/completions", "POST /v1/tasks"),
    )
)
CASHU_SCHEME = register(
    PaymentScheme(
        id="cashu",
        name="Cashu ecash (Routstr RIP-01)",
        description=(
            "X-Cashu: cashuB... (a token from an allowed mint, worth the price after the "
            "mint's fee) pays one request, its change comes back in X-Cashu and stays at GET "
            "/v1/cashu/change; Authorization: Bearer cashuB... opens a balance"
        ),
        security_scheme="cashu",
        operations=("POST /v1/chat/completions",),
        enabled_by="cashu_mint_list",
    )
)
