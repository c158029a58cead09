"""L402 credentials (bLIP-26): macaroons bound to a Lightning payment.

A challenge is ``WWW-Authenticate: L402 macaroon="<base64>", invoice="<bolt11>"``; the paid
credential is ``Authorization: L402 <base64 macaroon>:<hex preimage>`` (the older ``LSAT`` scheme
is accepted too, the scheme in any case, the preimage in either case of hex). bLIP-26 lets a
credential carry several macaroons, comma separated before the colon: each one is verified in
full, they must all be macaroons of one token (one preimage proves one payment), and the grant
is the narrowest they allow together.

The macaroon identifier is 66 bytes, big-endian: ``uint16 version (0) | 32-byte payment hash |
32-byte token id``. Each macaroon has its own random 32-byte root key, stored under
``sha256(identifier)``. Serialization is standard base64 (with padding) of the binary
V2 form, which is what Aperture and Go clients expect (pymacaroons' own ``serialize()`` is
URL-safe without padding; it is not used).

Verification runs in the order Aperture uses, and each failure has its own reason:
``malformed`` -> ``wrong_preimage`` -> ``unknown_token`` -> ``bad_signature`` -> caveats
(``wrong_service``, ``expired``, ``wrong_request``, ``missing_capability``) for each macaroon
-> ``several_tokens`` -> ``unpaid``.
Repeated caveats may only narrow: every occurrence must hold. Unknown caveats are skipped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pymacaroons import MACAROON_V2, Macaroon, Verifier
from pymacaroons.exceptions import MacaroonException
from pymacaroons.serializers import BinarySerializer

from .money import Msat
from .store import Store

VERSION = 0
_IDENTIFIER = struct.Struct(">H32s32s")
_MACAROON = r"[A-Za-z0-9+/=_-]+"
_CREDENTIAL = re.compile(
    rf"^(?i:LSAT|L402)[ \t]+({_MACAROON}(?:,[ \t]*{_MACAROON})*):([0-9a-fA-F]{{64}})$"
)
#: Macaroons one credential may carry: bounds the work (a root-key read and an HMAC chain each).
MAX_MACAROONS = 4


class L402Error(Exception):
    """A credential was refused. ``reason`` is stable and safe to return to the client."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Identifier:
    version: int
    payment_hash: bytes
    token_id: bytes

    def encode(self) -> bytes:
        return _IDENTIFIER.pack(self.version, self.payment_hash, self.token_id)

    @classmethod
    def decode(cls, raw: bytes) -> Identifier:
        if len(raw) != _IDENTIFIER.size:
            raise L402Error("malformed", "macaroon identifier is not 66 bytes")
        version, payment_hash, token_id = _IDENTIFIER.unpack(raw)
        if version != VERSION:
            raise L402Error("malformed", f"unknown identifier version {version}")
        return cls(version, payment_hash, token_id)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified credential allows."""

    token_id: str  # hex
    payment_hash: str  # hex
    max_price: Msat
    valid_until: int
    request_digest: str


def root_key_id(payment_hash: str, token_id: str) -> str:
    """Where a token's root key is stored: the sha256 of its identifier (hex arguments)."""
    identifier = Identifier(VERSION, bytes.fromhex(payment_hash), bytes.fromhex(token_id))
    return hashlib.sha256(identifier.encode()).hexdigest()


def request_digest(body: bytes) -> str:
    """The digest a credential is bound to: sha256 of the request body as sent."""
    return hashlib.sha256(body).hexdigest()


def challenge(macaroon: str, invoice: str) -> list[str]:
    """``WWW-Authenticate`` values: the legacy ``LSAT`` form first (as Aperture sends), then
    ``L402``."""
    return [f'{scheme} macaroon="{macaroon}", invoice="{invoice}"' for scheme in ("LSAT", "L402")]


def parse_credential(header: str) -> tuple[list[Macaroon], str]:
    """``L402 <macaroon>[,<macaroon>...]:<preimage>`` -> the macaroons and the preimage (lower
    case hex)."""
    match = _CREDENTIAL.match(header.strip())
    if match is None:
        raise L402Error("malformed", "expected 'L402 <base64 macaroon>:<hex preimage>'")
    encoded, preimage = match.groups()
    parts = [part.strip() for part in encoded.split(",")]
    if len(parts) > MAX_MACAROONS:
        raise L402Error(
            "malformed", f"a credential carries at most {MAX_MACAROONS} macaroons, not {len(parts)}"
        )
    return [_decode(part) for part in parts], preimage.lower()


def _decode(encoded: str) -> Macaroon:
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
        macaroon = BinarySerializer().deserialize_raw(raw)
    except (binascii.Error, ValueError, MacaroonException, IndexError, TypeError):
        raise L402Error("malformed", "macaroon is not base64 of a binary macaroon") from None
    except Exception as exc:
        if not _truncated_varint(exc):
            raise
        raise L402Error("malformed", "macaroon is not base64 of a binary macaroon") from None
    return macaroon


def _truncated_varint(exc: Exception) -> bool:
    """pymacaroons (0.13) raises a bare ``Exception`` when a field's length runs past the end
    of the buffer; only that one is a client's mistake, anything else is ours."""
    return type(exc) is Exception and str(exc) == "cannot read uvarint from buffer"


class L402Authority:
    """Mints and verifies L402 macaroons for one service; root keys live in the store."""

    def __init__(self, store: Store, *, service: str = "satrouter") -> None:
        self._store = store
        self.service = service

    async def mint(
        self,
        payment_hash: str,
        *,
        digest: str,
        max_price: Msat,
        valid_for: int,
        capabilities: Sequence[str] = ("chat",),
        now: float | None = None,
    ) -> tuple[str, str]:
        """A new macaroon for an invoice: ``(standard base64 macaroon, token id hex)``."""
        now = time.time() if now is None else now
        identifier = Identifier(VERSION, bytes.fromhex(payment_hash), secrets.token_bytes(32))
        root_key = secrets.token_bytes(32)
        async with self._store.transaction() as tx:
            await tx.put_root_key(
                root_key_id(payment_hash, identifier.token_id.hex()), root_key, now
            )
        caveats = self._caveats(capabilities, int(now + valid_for), digest, max_price)
        return self._encode(identifier, root_key, caveats), identifier.token_id.hex()

    async def reissue(
        self,
        payment_hash: str,
        token_id: str,
        *,
        digest: str,
        max_price: Msat,
        valid_until: int,
        capabilities: Sequence[str] = ("chat",),
    ) -> str:
        """A macaroon of an existing token (the same root key, so the same credit), with the
        caveats it was minted with: for a payer who paid its invoice under another scheme
        (MPP) and needs the L402 credential to read and withdraw its change."""
        identifier = Identifier(VERSION, bytes.fromhex(payment_hash), bytes.fromhex(token_id))
        async with self._store.read() as tx:
            root_key = await tx.root_key(root_key_id(payment_hash, token_id))
        if root_key is None:
            raise L402Error("unknown_token", "no such token")
        caveats = self._caveats(capabilities, valid_until, digest, max_price)
        return self._encode(identifier, root_key, caveats)

    def _caveats(
        self, capabilities: Sequence[str], valid_until: int, digest: str, max_price: Msat
    ) -> list[str]:
        return [
            f"services={self.service}:0",
            f"{self.service}_capabilities={','.join(capabilities)}",
            f"{self.service}_valid_until={valid_until}",
            f"{self.service}_request={digest}",
            f"{self.service}_max_price_msat={max_price.value}",
        ]

    def _encode(self, identifier: Identifier, root_key: bytes, caveats: Sequence[str]) -> str:
        macaroon = Macaroon(
            location=self.service,
            identifier=identifier.encode(),
            key=root_key,
            version=MACAROON_V2,
        )
        for caveat in caveats:
            macaroon.add_first_party_caveat(caveat)
        return base64.b64encode(BinarySerializer().serialize_raw(macaroon)).decode()

    async def verify(
        self,
        header: str,
        *,
        digest: str | None,
        is_settled: Callable[[str], Awaitable[bool]],
        capability: str = "chat",
        now: float | None = None,
        expired_ok: bool = False,
    ) -> Grant:
        """Check a credential; the grant, or :class:`L402Error` with the reason.

        ``digest`` is the digest of the request being made; ``None`` skips the binding (for
        spending credit left on a token). ``expired_ok`` accepts a token past its validity:
        for reading and withdrawing its own credit, which stays its holder's money.
        """
        now = time.time() if now is None else now
        macaroons, preimage = parse_credential(header)
        grants = [
            await self._check(m, preimage, digest, capability, None if expired_ok else now)
            for m in macaroons
        ]
        if len({g.token_id for g in grants}) != 1:
            raise L402Error(
                "several_tokens", "the macaroons are of different tokens; send one token's"
            )
        payment_hash = grants[0].payment_hash
        if not await is_settled(payment_hash):
            raise L402Error("unpaid", "the invoice for this token is not settled")
        return Grant(
            token_id=grants[0].token_id,
            payment_hash=payment_hash,
            max_price=min(g.max_price for g in grants),
            valid_until=min(g.valid_until for g in grants),
            request_digest=grants[0].request_digest,
        )

    async def _check(
        self,
        macaroon: Macaroon,
        preimage: str,
        digest: str | None,
        capability: str,
        now: float | None,  # None: past its validity is fine
    ) -> Grant:
        """Everything about one macaroon but its payment: what it would grant."""
        identifier = Identifier.decode(_identifier_bytes(macaroon))
        if hashlib.sha256(bytes.fromhex(preimage)).digest() != identifier.payment_hash:
            raise L402Error("wrong_preimage", "preimage does not match the payment hash")
        async with self._store.read() as tx:
            root_key = await tx.root_key(hashlib.sha256(identifier.encode()).hexdigest())
        if root_key is None:
            raise L402Error("unknown_token", "no such token")
        try:
            verifier = Verifier()
            verifier.satisfy_general(lambda caveat: True)  # caveats are judged below
            verifier.verify(macaroon, root_key)
        except MacaroonException:
            raise L402Error("bad_signature", "macaroon signature does not verify") from None
        except UnicodeDecodeError:  # pymacaroons decodes each first-party caveat as UTF-8
            raise L402Error("malformed", "a caveat is not UTF-8") from None
        caveats = _caveats(macaroon)
        prefix = self.service + "_"
        services = caveats.get("services", [])
        if not services or not all(
            any(s.split(":")[0] == self.service for s in entry.split(",")) for entry in services
        ):
            raise L402Error("wrong_service", f"token is not for {self.service}")
        expiries = [int(v) for v in caveats.get(prefix + "valid_until", []) if v.isdigit()]
        if not expiries or (now is not None and now > min(expiries)):
            raise L402Error("expired", "token has expired")
        digests = caveats.get(prefix + "request", [])
        if not digests or len(set(digests)) != 1:
            raise L402Error("wrong_request", "token is not bound to one request")
        if digest is not None and digests[0] != digest:
            raise L402Error("wrong_request", "token was issued for another request")
        if not all(
            capability in entry.split(",") for entry in caveats.get(prefix + "capabilities", [])
        ):
            raise L402Error("missing_capability", f"token does not allow {capability}")
        prices = [int(v) for v in caveats.get(prefix + "max_price_msat", []) if v.isdigit()]
        if not prices:
            raise L402Error("malformed", "token has no price")
        return Grant(
            token_id=identifier.token_id.hex(),
            payment_hash=identifier.payment_hash.hex(),
            max_price=Msat(min(prices)),
            valid_until=min(expiries),
            request_digest=digests[0],
        )


def _identifier_bytes(macaroon: Macaroon) -> bytes:
    identifier = macaroon.identifier_bytes
    return bytes(identifier) if not isinstance(identifier, str) else identifier.encode("latin-1")


def _caveats(macaroon: Macaroon) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for caveat in macaroon.first_party_caveats():
        text = caveat.caveat_id_bytes.decode("utf-8", "replace")
        key, sep, value = text.partition("=")
        if sep:
            found.setdefault(key.strip(), []).append(value.strip())
    return found
