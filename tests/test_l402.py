"""L402 credentials: minting, wire format, and each way a credential is refused."""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymacaroons import Macaroon
from pymacaroons.serializers import BinarySerializer

from billing.l402 import Identifier, L402Authority, L402Error, challenge, request_digest
from billing.money import Msat
from billing.store import Store, open_store

PREIMAGE = secrets.token_bytes(32)
PAYMENT_HASH = hashlib.sha256(PREIMAGE).hexdigest()
BODY = b'{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path}/l402.db")
    yield s
    await s.close()


async def _settled(payment_hash: str) -> bool:
    return payment_hash == PAYMENT_HASH


async def _unsettled(payment_hash: str) -> bool:
    return False


async def _mint(authority: L402Authority, valid_for: int = 3600) -> str:
    macaroon, _ = await authority.mint(
        PAYMENT_HASH, digest=request_digest(BODY), max_price=Msat(21_000), valid_for=valid_for
    )
    return macaroon


async def test_mint_and_verify(store: Store) -> None:
    authority = L402Authority(store)
    macaroon, token_id = await authority.mint(
        PAYMENT_HASH, digest=request_digest(BODY), max_price=Msat(21_000), valid_for=3600
    )
    grant = await authority.verify(
        f"L402 {macaroon}:{PREIMAGE.hex()}", digest=request_digest(BODY), is_settled=_settled
    )
    assert grant.token_id == token_id
    assert grant.payment_hash == PAYMENT_HASH
    assert grant.max_price == Msat(21_000)
    # The legacy scheme is accepted too.
    await authority.verify(
        f"LSAT {macaroon}:{PREIMAGE.hex()}", digest=request_digest(BODY), is_settled=_settled
    )


async def test_wire_format_is_standard_base64_of_binary_v2(store: Store) -> None:
    macaroon = await _mint(L402Authority(store))
    raw = base64.b64decode(macaroon, validate=True)  # standard alphabet, padded
    assert raw[0] == 2  # binary V2 version byte
    parsed = BinarySerializer().deserialize_raw(raw)
    identifier = Identifier.decode(parsed.identifier_bytes)
    assert identifier.version == 0
    assert identifier.payment_hash.hex() == PAYMENT_HASH
    assert len(identifier.token_id) == 32
    caveats = [c.caveat_id_bytes.decode() for c in parsed.first_party_caveats()]
    assert "services=satrouter:0" in caveats
    assert f"satrouter_request={request_digest(BODY)}" in caveats


def test_challenge_headers() -> None:
    headers = challenge("bWFj", "lnbc1")
    assert headers == [
        'LSAT macaroon="bWFj", invoice="lnbc1"',
        'L402 macaroon="bWFj", invoice="lnbc1"',
    ]


async def _reason(authority: L402Authority, header: str, **kwargs: object) -> str:
    kwargs.setdefault("digest", request_digest(BODY))
    kwargs.setdefault("is_settled", _settled)
    with pytest.raises(L402Error) as caught:
        await authority.verify(header, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


async def test_each_refusal_has_its_reason(store: Store) -> None:
    authority = L402Authority(store)
    macaroon = await _mint(authority)
    good = f"L402 {macaroon}:{PREIMAGE.hex()}"

    assert await _reason(authority, "Bearer abc") == "malformed"
    assert await _reason(authority, f"L402 !!!:{PREIMAGE.hex()}") == "malformed"
    assert await _reason(authority, f"L402 {macaroon}:{'0' * 64}") == "wrong_preimage"
    assert await _reason(authority, good, digest=request_digest(b"{}")) == "wrong_request"
    assert await _reason(authority, good, is_settled=_unsettled) == "unpaid"
    expired = await _mint(authority, valid_for=-10)
    assert await _reason(authority, f"L402 {expired}:{PREIMAGE.hex()}") == "expired"
    # Past its validity a token still proves whose credit it holds (to read and withdraw it).
    held = await authority.verify(
        f"L402 {expired}:{PREIMAGE.hex()}", digest=None, is_settled=_settled, expired_ok=True
    )
    assert held.payment_hash == hashlib.sha256(PREIMAGE).hexdigest()
    assert await _reason(authority, good, capability="admin") == "missing_capability"
    assert await _reason(L402Authority(store, service="other"), good) == "wrong_service"


async def test_forged_and_tampered_macaroons(store: Store) -> None:
    authority = L402Authority(store)
    macaroon = await _mint(authority)
    parsed = BinarySerializer().deserialize_raw(base64.b64decode(macaroon))

    # Forged: same identifier, signed with a key of the forger's choosing.
    forged = Macaroon(
        location="satrouter",
        identifier=parsed.identifier_bytes,
        key=secrets.token_bytes(32),
        version=2,
    )
    forged.add_first_party_caveat("services=satrouter:0")
    forged_b64 = base64.b64encode(BinarySerializer().serialize_raw(forged)).decode()
    assert await _reason(authority, f"L402 {forged_b64}:{PREIMAGE.hex()}") == "bad_signature"

    # Tampered: a caveat rewritten after signing (raise the price).
    raw = BinarySerializer().serialize_raw(parsed)
    tampered = raw.replace(b"max_price_msat=21000", b"max_price_msat=99000")
    assert tampered != raw
    tampered_b64 = base64.b64encode(tampered).decode()
    assert await _reason(authority, f"L402 {tampered_b64}:{PREIMAGE.hex()}") == "bad_signature"

    # A caveat added by the holder can only narrow: a later expiry does not extend it.
    parsed.add_first_party_caveat(f"satrouter_valid_until={int(time.time()) + 10**6}")
    widened = base64.b64encode(BinarySerializer().serialize_raw(parsed)).decode()
    grant = await authority.verify(
        f"L402 {widened}:{PREIMAGE.hex()}", digest=request_digest(BODY), is_settled=_settled
    )
    assert grant.valid_until < time.time() + 3700
    parsed.add_first_party_caveat(f"satrouter_valid_until={int(time.time()) - 1}")
    narrowed = base64.b64encode(BinarySerializer().serialize_raw(parsed)).decode()
    assert await _reason(authority, f"L402 {narrowed}:{PREIMAGE.hex()}") == "expired"


async def test_unknown_token(store: Store, tmp_path: Path) -> None:
    other = await open_store(f"sqlite:///{tmp_path}/other.db")
    try:
        macaroon = await _mint(L402Authority(other))
    finally:
        await other.close()
    assert await _reason(L402Authority(store), f"L402 {macaroon}:{PREIMAGE.hex()}") == (
        "unknown_token"
    )


async def test_secrets_stay_out_of_errors(store: Store) -> None:
    authority = L402Authority(store)
    macaroon = await _mint(authority)
    with pytest.raises(L402Error) as caught:
        await authority.verify(f"L402 {macaroon}:{'1' * 64}", digest=None, is_settled=_settled)
    assert macaroon not in str(caught.value)
    assert PREIMAGE.hex() not in str(caught.value)


async def test_mutated_macaroons_are_refused_as_l402_errors(store: Store) -> None:
    """Seeded byte flips, truncations and insertions of a real macaroon: each is refused with
    an L402 reason (pymacaroons raises a bare ``Exception`` on some, UnicodeDecodeError on
    others), never an unexpected error. The location is not signed (macaroons leave it out of
    the chain), so a change there alone still verifies, to the same grant."""
    authority = L402Authority(store)
    genuine = await _mint(authority)
    raw = base64.b64decode(genuine)
    expected = await authority.verify(
        f"L402 {genuine}:{PREIMAGE.hex()}", digest=request_digest(BODY), is_settled=_settled
    )
    rng = random.Random(402)
    reasons: set[str] = set()
    for n in range(3000):
        mutated = bytearray(raw)
        how = n % 4
        at = rng.randrange(len(mutated))
        if how == 0:
            mutated[at] = rng.randrange(256)
        elif how == 1:
            del mutated[at:]
        elif how == 2:
            mutated[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:  # a field's length prefix, the only bytes that steer the parser
            mutated[at] = rng.choice((0x00, 0x7F, 0x80, 0xFF))
        header = f"L402 {base64.b64encode(bytes(mutated)).decode()}:{PREIMAGE.hex()}"
        try:
            grant = await authority.verify(header, digest=request_digest(BODY), is_settled=_settled)
        except L402Error as refused:
            reasons.add(refused.reason)
        else:
            assert grant == expected
    assert {"malformed", "bad_signature", "unknown_token"} <= reasons


async def test_scheme_in_any_case_and_an_uppercase_preimage(store: Store) -> None:
    authority = L402Authority(store)
    macaroon = await _mint(authority)
    digest = request_digest(BODY)
    for scheme in ("l402", "Lsat", "L402\t"):
        header = f"{scheme} {macaroon}:{PREIMAGE.hex().upper()}"
        grant = await authority.verify(header, digest=digest, is_settled=_settled)
        assert grant.payment_hash == PAYMENT_HASH


def _attenuated(macaroon: str, *caveats: str) -> str:
    parsed = BinarySerializer().deserialize_raw(base64.b64decode(macaroon))
    for caveat in caveats:
        parsed.add_first_party_caveat(caveat)
    return base64.b64encode(BinarySerializer().serialize_raw(parsed)).decode()


async def test_several_macaroons_are_each_verified(store: Store) -> None:
    """bLIP-26: ``L402 <mac>,<mac>:<preimage>``. Every macaroon is checked in full; the grant
    is what they allow together; anything else is refused with its reason."""
    authority = L402Authority(store)
    macaroon = await _mint(authority)
    digest = request_digest(BODY)
    narrower = _attenuated(macaroon, "satrouter_max_price_msat=5000")
    grant = await authority.verify(
        f"L402 {macaroon},{narrower}:{PREIMAGE.hex()}", digest=digest, is_settled=_settled
    )
    assert grant.max_price == Msat(5_000)
    spaced = await authority.verify(
        f"L402 {narrower}, {macaroon}:{PREIMAGE.hex()}", digest=digest, is_settled=_settled
    )
    assert spaced == grant

    expired = _attenuated(macaroon, f"satrouter_valid_until={int(time.time()) - 1}")
    assert await _reason(authority, f"L402 {macaroon},{expired}:{PREIMAGE.hex()}") == "expired"
    assert await _reason(authority, f"L402 {macaroon},AAAA:{PREIMAGE.hex()}") == "malformed"
    assert await _reason(authority, f"L402 {macaroon},:{PREIMAGE.hex()}") == "malformed"
    five = ",".join([macaroon] * 5)
    assert await _reason(authority, f"L402 {five}:{PREIMAGE.hex()}") == "malformed"
    # Another payment's macaroon: the one preimage cannot match both.
    other_preimage = secrets.token_bytes(32)
    other, _ = await authority.mint(
        hashlib.sha256(other_preimage).hexdigest(),
        digest=digest,
        max_price=Msat(21_000),
        valid_for=3600,
    )
    assert await _reason(authority, f"L402 {macaroon},{other}:{PREIMAGE.hex()}") == (
        "wrong_preimage"
    )
    # Two tokens of the same payment: which one pays is ambiguous.
    twin = await _mint(authority)
    assert await _reason(authority, f"L402 {macaroon},{twin}:{PREIMAGE.hex()}") == (
        "several_tokens"
    )
