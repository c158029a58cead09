"""One 402, three offers of one invoice (L402, MPP ``Payment``, x402 v2 on Lightning), and the
paid forms that answer them, against the real service and a real LNbits: each runs the request
once, a repeat in the same form replays the answer, the same payment in another form is
refused, and credentials that were not issued for this request, or expired, change nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from billing import mpp, x402
from service.http.keys import STORE

from .conftest import CHEAP, Service

pytestmark = pytest.mark.lnbits
JSON = {"Content-Type": "application/json"}
URL = "/v1/chat/completions"


def _body(text: str, max_tokens: int = 30) -> bytes:
    messages = [{"role": "user", "content": text}]
    return json.dumps({"model": CHEAP, "messages": messages, "max_tokens": max_tokens}).encode()


def _b64url_json(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _params(value: str) -> dict[str, str]:
    """The auth-params of one ``Payment`` challenge (no value here holds a quote or comma)."""
    _, _, rest = value.partition(" ")
    pairs = (part.strip().split("=", 1) for part in rest.split(","))
    return {k: v.strip('"') for k, v in pairs}


def _mpp_credential(challenge: dict[str, str], preimage: str) -> str:
    echo = {k: challenge[k] for k in ("id", "realm", "method", "intent", "request", "expires")}
    token = {"challenge": echo, "payload": {"preimage": preimage}}
    return "Payment " + mpp.b64url(json.dumps(token).encode())


def _x402_signature(required: dict[str, Any], invoice: str) -> str:
    accepted = required["accepts"][0]
    signature = {
        "x402Version": 2,
        "scheme": accepted["scheme"],
        "network": accepted["network"],
        "payload": {"invoice": invoice},
        "accepted": accepted,
    }
    return base64.b64encode(json.dumps(signature).encode()).decode()


async def _offered(http: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
    """The 402 of an unpaid request: its problem, the MPP challenge, the x402 requirements."""
    response = await http.post(URL, content=body, headers=JSON)
    assert response.status_code == 402, response.text
    values = response.headers.get_list("WWW-Authenticate")
    problem = dict(response.json())
    return {
        "problem": problem,
        "schemes": [v.split(" ")[0] for v in values],
        "values": values,
        "mpp": _params(values[2]),
        "x402": json.loads(base64.b64decode(response.headers["PAYMENT-REQUIRED"])),
    }


async def _state(service: Service) -> tuple[int, int]:
    async with service.app[STORE].read() as tx:
        return (await tx.ledger_totals()).entries, service.emulator.state.counters["completions"]


async def test_a_402_offers_one_invoice_as_l402_then_mpp_then_x402(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, _body("what is 2+2"))
    problem, invoice = offered["problem"], offered["problem"]["invoice"]
    assert offered["schemes"] == ["LSAT", "L402", "Payment"]
    for value in offered["values"][:2]:
        assert f'invoice="{invoice}"' in value
    challenge = offered["mpp"]
    assert (challenge["method"], challenge["intent"], challenge["realm"]) == (
        "lightning",
        "charge",
        "satrouter",
    )
    request = _b64url_json(challenge["request"])
    assert request["methodDetails"]["invoice"] == invoice
    assert request["currency"] == "sat"
    total = problem["price"]["total_msat"]
    assert int(request["amount"]) == -(-total // 1000)
    digest = base64.b64encode(hashlib.sha256(_body("what is 2+2")).digest()).decode()
    assert challenge["digest"] == f"sha-256=:{digest}:"
    required = offered["x402"]
    assert required["x402Version"] == 2
    [lightning] = required["accepts"]
    assert lightning["network"] == x402.NETWORK and lightning["scheme"] == "exact"
    assert lightning["extra"] == {
        "paymentMethod": "lightning",
        "invoice": invoice,
        "paymentHash": request["methodDetails"]["paymentHash"],
    }
    assert int(lightning["amount"]) == total
    assert [o["scheme"] for o in problem["offers"]] == ["L402", "Payment", "x402"]
    assert problem["offers"][1]["id"] == challenge["id"]
    assert problem["offers"][2]["accepts"] == required["accepts"]


async def test_mpp_pays_once_replays_and_its_change_is_credit_on_the_token(
    service: Service,
) -> None:
    body = _body("mpp question")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        paid = await service.pay(offered["problem"]["invoice"])
        credential = {**JSON, "Authorization": _mpp_credential(offered["mpp"], paid["preimage"])}
        first = await http.post(URL, content=body, headers=credential)
        assert first.status_code == 200, first.text
        receipt = _b64url_json(first.headers["Payment-Receipt"])
        assert receipt["status"] == "success" and receipt["method"] == "lightning"
        assert (
            receipt["reference"]
            == _b64url_json(offered["mpp"]["request"])["methodDetails"]["paymentHash"]
        )
        assert receipt["challengeId"] == offered["mpp"]["id"]
        again = await http.post(URL, content=body, headers=credential)
        assert again.status_code == 200 and again.headers["X-Satrouter-Replay"] == "true"
        assert again.json() == first.json() and "Payment-Receipt" in again.headers
        # The change: credit on the token, read (and withdrawn) with the macaroon it names.
        l402 = {"Authorization": f"L402 {receipt['macaroon']}:{paid['preimage']}"}
        for _ in range(200):
            me = (await http.get("/v1/accounts/me", headers=l402)).json()
            if me["balance_msat"] > 0:
                break
            await asyncio.sleep(0.05)
        assert me["id"].startswith("l402_") and me["balance_msat"] > 0
        reconciled = await http.post(URL, content=body, headers=credential)  # still MPP's
        assert reconciled.status_code == 200 and reconciled.json() == first.json()
    assert service.emulator.state.counters["completions"] == 1
    assert (await service.check_ledger()).ok


async def test_one_payment_presented_under_another_scheme_is_refused(service: Service) -> None:
    body = _body("paid once")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        problem = offered["problem"]
        paid = await service.pay(problem["invoice"])
        signature = {
            **JSON,
            "PAYMENT-SIGNATURE": _x402_signature(offered["x402"], problem["invoice"]),
        }
        first = await http.post(URL, content=body, headers=signature)
        assert first.status_code == 200, first.text
        response = json.loads(base64.b64decode(first.headers["PAYMENT-RESPONSE"]))
        assert response == {
            "success": True,
            "transaction": offered["x402"]["accepts"][0]["extra"]["paymentHash"],
            "network": x402.NETWORK,
        }
        before = await _state(service)
        as_l402 = {**JSON, "Authorization": f"L402 {problem['macaroon']}:{paid['preimage']}"}
        as_mpp = {**JSON, "Authorization": _mpp_credential(offered["mpp"], paid["preimage"])}
        for other in (as_l402, as_mpp):
            refused = await http.post(URL, content=body, headers=other)
            assert refused.status_code == 409, refused.text
            assert refused.json()["type"] == "urn:satrouter:problem:payment_already_used"
        assert await _state(service) == before
        again = await http.post(URL, content=body, headers=signature)  # each invoice once
        assert again.status_code == 200 and again.headers["X-Satrouter-Replay"] == "true"
    assert service.emulator.state.counters["completions"] == 1
    assert (await service.check_ledger()).ok


async def test_forged_expired_and_other_request_mpp_credentials_change_nothing(
    service: Service,
) -> None:
    body = _body("guarded")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        paid = await service.pay(offered["problem"]["invoice"])
        preimage = paid["preimage"]
        challenge = offered["mpp"]
        before = await _state(service)
        secret = await mpp.server_secret(service.app[STORE])
        forged_request = dict(_b64url_json(challenge["request"]), amount="1")
        forged = {**challenge, "request": mpp.b64url(mpp.canonical(forged_request).encode())}
        expired_echo = replace(
            mpp.Echo("", "satrouter", "lightning", "charge", challenge["request"]),
            expires=mpp.rfc3339(time.time() - 60),
            digest=mpp.content_digest(body),
        )
        expired = {
            **challenge,
            "expires": expired_echo.expires,
            "id": mpp.challenge_id(secret, expired_echo),
        }
        cases = [
            (body, {**challenge, "id": "A" * 43}, preimage, 401, "mpp_invalid_challenge"),
            (body, forged, preimage, 401, "mpp_invalid_challenge"),
            (_body("another request"), challenge, preimage, 401, "mpp_invalid_challenge"),
            (body, challenge, "0" * 64, 401, "mpp_wrong_preimage"),
            (body, expired, preimage, 402, "mpp_expired"),
        ]
        for sent, echo, proof, status, kind in cases:
            headers = {**JSON, "Authorization": _mpp_credential(echo, proof)}
            refused = await http.post(URL, content=sent, headers=headers)
            assert refused.status_code == status, (kind, refused.text)
            assert refused.json()["type"] == f"urn:satrouter:problem:{kind}"
        malformed = await http.post(
            URL, content=body, headers={**JSON, "Authorization": "Payment !!!"}
        )
        assert malformed.status_code == 401 and malformed.json()["type"].endswith("mpp_malformed")
        deep = {**JSON, "Authorization": "Payment " + mpp.b64url(b"[" * 5000)}
        nested = await http.post(URL, content=body, headers=deep)
        assert nested.status_code == 401 and nested.json()["type"].endswith("mpp_malformed")
        assert await _state(service) == before
    assert (await service.check_ledger()).ok


async def test_x402_refuses_an_unpaid_invoice_and_one_issued_for_another_request(
    service: Service,
) -> None:
    body = _body("x402 question")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        elsewhere = await _offered(http, _body("another x402 question"))
        await service.pay(elsewhere["problem"]["invoice"])
        foreign = await service.agent_invoice(5)  # a real invoice, not issued here
        before = await _state(service)
        cases = [
            (offered["problem"]["invoice"], "x402_unpaid"),
            (elsewhere["problem"]["invoice"], "x402_wrong_request"),
            (foreign, "x402_unknown_invoice"),
        ]
        for invoice, kind in cases:
            headers = {**JSON, "PAYMENT-SIGNATURE": _x402_signature(offered["x402"], invoice)}
            refused = await http.post(URL, content=body, headers=headers)
            assert refused.status_code == 402, refused.text
            assert refused.json()["type"] == f"urn:satrouter:problem:{kind}"
            assert "PAYMENT-REQUIRED" in refused.headers  # a fresh offer to pay
        garbage = {**JSON, "PAYMENT-SIGNATURE": "not base64 json"}
        malformed = await http.post(URL, content=body, headers=garbage)
        assert malformed.status_code == 400 and malformed.json()["type"].endswith("x402_malformed")
        deep = {**JSON, "PAYMENT-SIGNATURE": base64.b64encode(b"[" * 5000).decode()}
        nested = await http.post(URL, content=body, headers=deep)
        assert nested.status_code == 400 and nested.json()["type"].endswith("x402_malformed")
        assert await _state(service) == before
    assert (await service.check_ledger()).ok


async def test_processes_asking_for_the_mpp_secret_at_once_agree_on_one(service: Service) -> None:
    store = service.app[STORE]
    secrets = await asyncio.gather(*(mpp.server_secret(store) for _ in range(8)))
    assert len(set(secrets)) == 1 and len(secrets[0]) == 32
    assert await mpp.server_secret(store) == secrets[0]


async def test_the_change_of_an_mpp_payment_is_withdrawn_with_the_receipts_macaroon(
    service: Service,
) -> None:
    body = json.dumps(
        {
            "model": "anthropic/claude-opus-4",
            "messages": [{"role": "user", "content": "a dear question [[tokens=20]]"}],
            "max_tokens": 2000,
        }
    ).encode()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        paid = await service.pay(offered["problem"]["invoice"])
        credential = {**JSON, "Authorization": _mpp_credential(offered["mpp"], paid["preimage"])}
        answer = await http.post(URL, content=body, headers=credential)
        assert answer.status_code == 200, answer.text
        macaroon = _b64url_json(answer.headers["Payment-Receipt"])["macaroon"]
        l402 = {"Authorization": f"L402 {macaroon}:{paid['preimage']}"}
        for _ in range(200):
            balance = (await http.get("/v1/accounts/me", headers=l402)).json()["balance_msat"]
            if balance > 100_000:
                break
            await asyncio.sleep(0.05)
        invoice = await service.agent_invoice(100)
        withdrawal = await http.post(
            "/v1/accounts/withdrawals", headers=l402, json={"invoice": invoice}
        )
        assert withdrawal.status_code == 200, withdrawal.text
        assert withdrawal.json()["status"] == "succeeded"
        after = (await http.get("/v1/accounts/me", headers=l402)).json()["balance_msat"]
        assert after <= balance - 100_000
    assert (await service.check_ledger()).ok
