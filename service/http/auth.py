"""Who is paying: an API key (prepaid account) or a task token, from ``Authorization: Bearer``.

API keys are ``sk-sat-...`` and stored only as their sha256. Task tokens are
``tt_<task id>.<secret>``, checked against the hash kept on the task. Either names a *payer*:
the ledger account whose credit pays (``acct_<id>`` or ``task_<id>``).
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from billing.l402 import L402Error
from billing.store import Store

from .. import logs
from ..tasks.record import record_of
from .problems import Problem

API_KEY_PREFIX = "sk-sat-"
TASK_TOKEN_PREFIX = "tt_"


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def payer_of(store: Store, secret: str) -> str:
    """The payer a bearer secret stands for, or a 401 problem."""
    if secret.startswith((API_KEY_PREFIX, "cashu")):  # a Cashu token is the key it opened
        async with store.lookup() as tx:
            account = await tx.api_account_by_key_hash(key_hash(secret))
        if account is not None:
            logs.payer_id.set(account)
            return account
    elif secret.startswith(TASK_TOKEN_PREFIX) and "." in secret:
        task_id = secret[len(TASK_TOKEN_PREFIX) :].split(".", 1)[0]
        async with store.lookup() as tx:
            task = await tx.task(task_id)
        if task is not None and hmac.compare_digest(
            str(record_of(task).token_hash or ""), key_hash(secret)
        ):
            logs.payer_id.set(task_id)
            logs.task_id.set(task_id)
            return task_id
    raise Problem(
        401,
        "invalid_credentials",
        "unknown API key or task token",
        headers={"WWW-Authenticate": 'Bearer realm="satrouter"'},
    )


async def require_payer(request: web.Request, store: Store, *, expired_ok: bool = False) -> str:
    """The payer behind ``Authorization``: an API key, a task token, or an L402 credential
    (whose token's credit is the payer; ``expired_ok`` accepts one past its validity, to read
    and withdraw the credit that stays its holder's)."""
    scheme = request.headers.get("Authorization", "").partition(" ")[0].upper()
    if scheme in ("L402", "LSAT"):
        from .keys import ENGINE, L402

        engine = request.app[ENGINE]
        try:
            grant = await request.app[L402].verify(
                request.headers["Authorization"],
                digest=None,
                is_settled=engine.confirm,
                expired_ok=expired_ok,
            )
        except L402Error as exc:
            raise l402_refusal(exc) from None
        logs.payer_id.set(f"l402_{grant.token_id}")
        return f"l402_{grant.token_id}"
    secret = bearer(request)
    if secret is None:
        raise Problem(
            401,
            "credentials_required",
            "send Authorization: Bearer <API key>",
            headers={"WWW-Authenticate": 'Bearer realm="satrouter"'},
        )
    return await payer_of(store, secret)


def l402_refusal(exc: L402Error) -> Problem:
    """A refused L402 credential: 401, as bLIP-26 says for an invalid credential and for an
    invoice not (yet) paid. Its preimage proves the payment was made, so a settlement not seen
    yet is a moment's lag: it says to retry shortly rather than offer an invoice to pay again."""
    if exc.reason == "unpaid":
        return Problem(
            401,
            "l402_unpaid",
            f"{exc.detail}; its settlement may not be confirmed yet: retry shortly",
            retry_after=1,
        )
    return Problem(401, f"l402_{exc.reason}", exc.detail)
