"""L402 on the chat endpoint at its edges, over real HTTP with a real LNbits: every 402 carries
a fresh challenge for the request it refuses (a token short of credit, an expired token), and
credentials are read as bLIP-26 writes them (the scheme in any case, uppercase hex, several
macaroons)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from pymacaroons.serializers import BinarySerializer

from billing.l402 import request_digest
from billing.money import Msat
from service.http.keys import L402

from .conftest import CHEAP, Service

pytestmark = pytest.mark.lnbits
JSON = {"Content-Type": "application/json"}


DEAR = "anthropic/claude-opus-4"


def _body(text: str, max_tokens: int = 30, model: str = CHEAP) -> bytes:
    messages = [{"role": "user", "content": text}]
    return json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens}).encode()


def _challenge_of(response: httpx.Response) -> dict[str, Any]:
    """The challenge a 402 carries, checked the way L402 clients read it."""
    assert response.status_code == 402, response.text
    schemes = response.headers.get_list("WWW-Authenticate")
    assert [s.split(" ")[0] for s in schemes] == ["LSAT", "L402", "Payment"]
    problem = dict(response.json())
    for value in schemes[:2]:
        assert f'macaroon="{problem["macaroon"]}"' in value
        assert f'invoice="{problem["invoice"]}"' in value
    return problem


async def _paid_token(
    service: Service, http: httpx.AsyncClient, body: bytes
) -> tuple[dict[str, Any], str]:
    problem = _challenge_of(await http.post("/v1/chat/completions", content=body, headers=JSON))
    paid = await service.pay(problem["invoice"])
    return problem, str(paid["preimage"])


def _attenuated(macaroon: str, caveat: str) -> str:
    parsed = BinarySerializer().deserialize_raw(base64.b64decode(macaroon))
    parsed.add_first_party_caveat(caveat)
    return base64.b64encode(BinarySerializer().serialize_raw(parsed)).decode()


async def test_a_token_short_of_credit_gets_a_fresh_challenge_for_that_request(
    service: Service,
) -> None:
    first = _body("first question")
    async with httpx.AsyncClient(base_url=service.url) as http:
        problem, preimage = await _paid_token(service, http, first)
        auth = {**JSON, "Authorization": f"L402 {problem['macaroon']}:{preimage}"}
        ran = await http.post("/v1/chat/completions", content=first, headers=auth)
        assert ran.status_code == 200, ran.text

        # Another request on the same token: what is left of its payment cannot cover it.
        other = _body("another question, a longer answer", max_tokens=2000, model=DEAR)
        short = await http.post("/v1/chat/completions", content=other, headers=auth)
        fresh = _challenge_of(short)
        assert fresh["type"] == "urn:satrouter:problem:insufficient_balance"
        assert fresh["macaroon"] != problem["macaroon"]
        assert fresh["invoice"] != problem["invoice"]
        assert fresh["price"]["total_msat"] > problem["price"]["total_msat"]  # its own quote
        assert "the token's credit does not cover this request" in fresh["detail"]
        assert fresh["error"]["code"] == "insufficient_balance"
        # The challenge is bound to that request: paying it runs it.
        paid = await service.pay(fresh["invoice"])
        again = {**JSON, "Authorization": f"L402 {fresh['macaroon']}:{paid['preimage']}"}
        answer = await http.post("/v1/chat/completions", content=other, headers=again)
        assert answer.status_code == 200, answer.text
        assert "X-Satrouter-Replay" not in answer.headers
    assert service.emulator.state.counters["completions"] == 2
    assert (await service.check_ledger()).ok


async def test_an_expired_token_gets_a_fresh_challenge(service: Service) -> None:
    body = _body("a question for later")
    async with httpx.AsyncClient(base_url=service.url) as http:
        problem, preimage = await _paid_token(service, http, body)
        # The holder narrowed its token to a moment already past (macaroons allow that).
        expired = _attenuated(problem["macaroon"], f"satrouter_valid_until={int(time.time()) - 1}")
        auth = {**JSON, "Authorization": f"L402 {expired}:{preimage}"}
        refused = await http.post("/v1/chat/completions", content=body, headers=auth)
        fresh = _challenge_of(refused)
        assert fresh["type"] == "urn:satrouter:problem:l402_expired"
        assert fresh["macaroon"] != problem["macaroon"]
        paid = await service.pay(fresh["invoice"])
        renewed = {**JSON, "Authorization": f"L402 {fresh['macaroon']}:{paid['preimage']}"}
        answer = await http.post("/v1/chat/completions", content=body, headers=renewed)
        assert answer.status_code == 200, answer.text
        # Its credit stays its holder's: an expired token still reads (and withdraws) it.
        me = await http.get("/v1/accounts/me", headers={"Authorization": auth["Authorization"]})
        assert me.status_code == 200, me.text
        assert me.json()["id"].startswith("l402_")
    assert (await service.check_ledger()).ok


async def test_credentials_as_bLIP_26_writes_them(service: Service) -> None:
    body = _body("spelled differently")
    async with httpx.AsyncClient(base_url=service.url) as http:
        problem, preimage = await _paid_token(service, http, body)
        macaroon = problem["macaroon"]
        lower = {**JSON, "Authorization": f"l402 {macaroon}:{preimage.upper()}"}
        ran = await http.post("/v1/chat/completions", content=body, headers=lower)
        assert ran.status_code == 200, ran.text
        narrower = _attenuated(macaroon, f"satrouter_valid_until={int(time.time()) + 600}")
        several = {**JSON, "Authorization": f"Lsat {macaroon},{narrower}:{preimage}"}
        replay = await http.post("/v1/chat/completions", content=body, headers=several)
        assert replay.status_code == 200, replay.text
        assert replay.headers["X-Satrouter-Replay"] == "true"
        assert replay.json() == ran.json()
        broken = {**JSON, "Authorization": f"L402 {macaroon},AAAA:{preimage}"}
        refused = await http.post("/v1/chat/completions", content=body, headers=broken)
        assert refused.status_code == 401
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("l402_malformed")
    assert service.emulator.state.counters["completions"] == 1


async def test_a_credential_whose_payment_is_not_seen_yet_is_401_retry_shortly(
    service: Service,
) -> None:
    """bLIP-26: an invoice not paid is 401. A matching preimage means the payment was made, so
    a challenge to pay again would be wrong: the answer says to retry in a moment."""
    body = _body("paid, not yet confirmed")
    preimage = secrets.token_bytes(32)
    macaroon, _ = await service.app[L402].mint(
        hashlib.sha256(preimage).hexdigest(),
        digest=request_digest(body),
        max_price=Msat(50_000),
        valid_for=600,
    )
    before = await service.journal_size()
    async with httpx.AsyncClient(base_url=service.url) as http:
        auth = {**JSON, "Authorization": f"L402 {macaroon}:{preimage.hex()}"}
        refused = await http.post("/v1/chat/completions", content=body, headers=auth)
    assert refused.status_code == 401, refused.text
    assert refused.json()["type"].endswith("l402_unpaid")
    assert refused.headers["Retry-After"] == "1"
    assert "WWW-Authenticate" not in refused.headers
    assert await service.journal_size() == before
