"""The ``Payment`` HTTP authentication scheme (draft-ryan-httpauth-payment, "MPP") with the
Lightning ``charge`` intent (draft-lightning-charge-00): one invoice per request.

A challenge is ``WWW-Authenticate: Payment id="...", realm="...", method="lightning",
intent="charge", request="<base64url JSON>", expires="<RFC 3339>", digest="sha-256=:...:"``.
Its ``id`` is an HMAC-SHA256 under a server secret over the other fields, joined by ``|`` in
the fixed slots that mppx and Aperture use (realm, method, intent, request, expires, digest,
opaque), so the server keeps nothing per challenge to check one: a credential echoes the
challenge, and the id verifies only if every field is as issued. The digest slot is always
recomputed from the request presented (clients such as Alby's do not echo ``digest``), which
binds the credential to that request body.

The credential is ``Authorization: Payment <base64url JSON>``:
``{"challenge": {...echo...}, "payload": {"preimage": "<hex>"}}``; the answer carries
``Payment-Receipt: <base64url JSON>`` (``status``, ``method``, ``timestamp``, ``reference``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json

from .store import Store, StoreError

SCHEME = "Payment"
METHOD = "lightning"
INTENT = "charge"
REALM = "satrouter"
#: Where the HMAC secret of challenge ids is kept (made on first use, kept across restarts).
SECRET_ID = hashlib.sha256(b"satrouter mpp challenge secret").hexdigest()
#: A credential longer than this is refused before it is decoded (work per request is bounded).
MAX_CREDENTIAL = 16_384
_PREIMAGE = re.compile(r"^[0-9a-f]{64}$")


class MppError(Exception):
    """A credential was refused; ``reason`` is stable and safe to show."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Echo:
    """The challenge as a credential echoes it."""

    id: str
    realm: str
    method: str
    intent: str
    request: str
    expires: str = ""
    digest: str = ""
    opaque: str = ""


@dataclass(frozen=True, slots=True)
class Credential:
    challenge: Echo
    preimage: str  # lower-case hex
    payment_hash: str  # from the challenge's request
    invoice: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(value: Any) -> str:
    """JSON in RFC 8785 form for the values used here (strings, integers, objects): keys
    sorted, no spaces; what mppx re-serializes a challenge's request to."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_digest(body: bytes) -> str:
    """The ``digest`` parameter of a request body (RFC 9530 ``sha-256=:<base64>:``)."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def challenge_id(secret: bytes, echo: Echo) -> str:
    slots = (
        echo.realm,
        echo.method,
        echo.intent,
        echo.request,
        echo.expires,
        echo.digest,
        echo.opaque,
    )
    return b64url(hmac.new(secret, "|".join(slots).encode(), hashlib.sha256).digest())


async def server_secret(store: Store) -> bytes:
    """The secret challenge ids are bound with: one per deployment, made by whichever process
    needs it first and never replaced (kept beside the L402 root keys, whose table only
    inserts: two replicas starting at once end up with the same one)."""
    async with store.read() as tx:
        kept = await tx.root_key(SECRET_ID)
    if kept is None:
        with contextlib.suppress(StoreError):  # another process made it first: theirs holds
            async with store.transaction() as tx:
                await tx.put_root_key(SECRET_ID, secrets.token_bytes(32), time.time())
        async with store.read() as tx:
            kept = await tx.root_key(SECRET_ID)
    if kept is None:
        raise StoreError("the MPP challenge secret could not be kept")
    return kept


def charge_request(
    *, amount_msat: int, invoice: str, payment_hash: str, network: str, description: str
) -> str:
    """The ``request`` parameter: the charge in sat (rounded up), the invoice to pay."""
    details = {"invoice": invoice, "paymentHash": payment_hash, "network": network}
    request = {
        "amount": str(-(-amount_msat // 1000)),
        "currency": "sat",
        "description": description,
        "methodDetails": details,
    }
    return b64url(canonical(request).encode())


def challenge(secret: bytes, *, request: str, expires_at: float, body: bytes) -> tuple[str, Echo]:
    """A ``WWW-Authenticate`` value for one request and its echo (with the id)."""
    unsigned = Echo(
        "",
        REALM,
        METHOD,
        INTENT,
        request,
        rfc3339(expires_at),
        content_digest(body),
    )
    echo = replace(unsigned, id=challenge_id(secret, unsigned))
    params = [
        ("id", echo.id),
        ("realm", echo.realm),
        ("method", echo.method),
        ("intent", echo.intent),
        ("request", echo.request),
        ("expires", echo.expires),
        ("digest", echo.digest),
    ]
    return SCHEME + " " + ", ".join(f'{k}="{v}"' for k, v in params), echo


def parse_credential(header: str) -> Credential:
    """``Payment <base64url JSON>`` -> the credential; :class:`MppError` ``malformed``."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != SCHEME.lower() or not token:
        raise MppError("malformed", "expected 'Payment <base64url credential>'")
    if len(token) > MAX_CREDENTIAL:
        raise MppError("malformed", "the credential is too long")
    try:
        data = from_json(_unb64url(token))  # refuses nesting past 200 levels (no recursion)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise MppError("malformed", "the credential is not base64url JSON") from None
    if not isinstance(data, dict):
        raise MppError("malformed", "the credential is not a JSON object")
    echoed, payload = data.get("challenge"), data.get("payload")
    if not isinstance(echoed, dict) or not isinstance(payload, dict):
        raise MppError("malformed", "the credential needs 'challenge' and 'payload' objects")
    fields = {k: echoed.get(k, "") for k in ("id", "realm", "method", "intent", "request")}
    fields |= {k: echoed.get(k, "") for k in ("expires", "digest", "opaque")}
    if not all(isinstance(v, str) for v in fields.values()) or not fields["id"]:
        raise MppError("malformed", "the echoed challenge's fields must be strings")
    preimage = payload.get("preimage")
    if not isinstance(preimage, str) or not _PREIMAGE.match(preimage.lower()):
        raise MppError("malformed", "payload.preimage must be 64 hex characters")
    echo = Echo(**fields)
    details = _request(echo.request).get("methodDetails")
    if not isinstance(details, dict):
        raise MppError("malformed", "the challenge's request has no methodDetails")
    payment_hash, invoice = details.get("paymentHash"), details.get("invoice")
    if not isinstance(payment_hash, str) or not isinstance(invoice, str):
        raise MppError("malformed", "the challenge's request names no invoice")
    return Credential(echo, preimage.lower(), payment_hash.lower(), invoice)


def _request(encoded: str) -> dict[str, Any]:
    try:
        request = from_json(_unb64url(encoded))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise MppError("malformed", "the challenge's request is not base64url JSON") from None
    if not isinstance(request, dict):
        raise MppError("malformed", "the challenge's request is not a JSON object")
    return request


def verify(secret: bytes, credential: Credential, *, body: bytes, now: float | None = None) -> None:
    """Check that the challenge was issued here, for this request body, is still valid, and
    that the preimage pays its invoice. Settlement is the caller's (ask the backend)."""
    echo = credential.challenge
    digest = content_digest(body)
    if echo.digest and echo.digest != digest:
        raise MppError("wrong_request", "the challenge was issued for another request")
    expected = challenge_id(secret, replace(echo, id="", digest=digest))
    if not hmac.compare_digest(expected, echo.id):
        raise MppError(
            "invalid_challenge", "the challenge was not issued here for this request as sent"
        )
    if (echo.realm, echo.method, echo.intent) != (REALM, METHOD, INTENT):
        raise MppError("invalid_challenge", "not a lightning charge challenge of this service")
    try:
        expires = datetime.fromisoformat(echo.expires.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise MppError("malformed", "the challenge's expiry is not an RFC 3339 time") from None
    # The preimage first: only a payer of this invoice learns that its challenge expired
    # (and is offered a new one).
    if hashlib.sha256(bytes.fromhex(credential.preimage)).hexdigest() != credential.payment_hash:
        raise MppError("wrong_preimage", "the preimage does not pay the challenge's invoice")
    if (time.time() if now is None else now) > expires:
        raise MppError("expired", "the challenge has expired")


def receipt(reference: str, challenge_id: str, extra: Mapping[str, str]) -> str:
    """A ``Payment-Receipt`` value: success, by lightning, for ``reference`` (the payment
    hash), with ``extra`` fields beside the standard ones."""
    data = {
        "status": "success",
        "method": METHOD,
        "timestamp": rfc3339(time.time()),
        "reference": reference,
        "challengeId": challenge_id,
        **extra,
    }
    return b64url(canonical(data).encode())
