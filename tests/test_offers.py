"""One 402, three offers of one invoice (L402, MPP ``Payment``, x402 v2 on Lightning), and the
paid forms that answer them, against the real service and a real LNbits: each runs the request
once, a repeat replays the answer (to the preimage in any form; to x402 only of a run it
started), a run that failed runs again when repeated, and credentials that were not issued for
this request, or expired, are answered with a fresh offer held to the invoice limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing import mpp, x402
from billing.lightning import decode_invoice
from billing.money import Msat
from billing.pricing import PricingPolicy
from service.app import create_app
from service.demo.loopback import serve
from service.emulator.faults import Fault
from service.http.keys import ENGINE, STORE
from service.tasks.engine import EngineConfig

from .conftest import CHEAP, Emulator, Service, service_settings

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
    # the requirements accepted name the invoice presented (as a client paying it sends them)
    accepted = required["accepts"][0]
    accepted = {**accepted, "extra": {**accepted["extra"], "invoice": invoice}}
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


async def test_an_x402_presentation_of_a_payment_served_under_another_scheme_is_refused(
    service: Service,
) -> None:
    """The invoice is no secret: x402 naming a payment L402 already ran is refused."""
    body = _body("paid once by L402")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        problem = offered["problem"]
        paid = await service.pay(problem["invoice"])
        as_l402 = {**JSON, "Authorization": f"L402 {problem['macaroon']}:{paid['preimage']}"}
        first = await http.post(URL, content=body, headers=as_l402)
        assert first.status_code == 200, first.text
        before = await _state(service)
        signature = {
            **JSON,
            "PAYMENT-SIGNATURE": _x402_signature(offered["x402"], problem["invoice"]),
        }
        refused = await http.post(URL, content=body, headers=signature)
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"] == "urn:satrouter:problem:payment_already_used"
        assert await _state(service) == before
    assert service.emulator.state.counters["completions"] == 1


async def test_one_payment_run_by_x402_replays_to_its_preimage(service: Service) -> None:
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
        for other in (as_l402, as_mpp):  # the preimage proves the payment: the same answer
            replayed = await http.post(URL, content=body, headers=other)
            assert replayed.status_code == 200, replayed.text
            assert replayed.headers["X-Satrouter-Replay"] == "true"
            assert replayed.json() == first.json()
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
        # the settlement recorded now, not by a push landing among the refusals below
        assert await service.app[ENGINE].confirm(
            offered["x402"]["accepts"][0]["extra"]["paymentHash"]
        )
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
            (body, {**challenge, "id": "A" * 43}, preimage, "mpp_invalid_challenge"),
            (body, forged, preimage, "mpp_invalid_challenge"),
            (_body("another request"), challenge, preimage, "mpp_invalid_challenge"),
            (body, challenge, "0" * 64, "mpp_wrong_preimage"),
            (body, expired, preimage, "mpp_expired"),
            (body, expired, "0" * 64, "mpp_wrong_preimage"),  # the preimage before the expiry
        ]
        for sent, echo, proof, kind in cases:
            headers = {**JSON, "Authorization": _mpp_credential(echo, proof)}
            refused = await http.post(URL, content=sent, headers=headers)
            # refused as any unpaid request is: 402 with a fresh offer in each form
            assert refused.status_code == 402, (kind, refused.text)
            assert refused.json()["type"] == f"urn:satrouter:problem:{kind}"
            assert "PAYMENT-REQUIRED" in refused.headers
        malformed = await http.post(
            URL, content=body, headers={**JSON, "Authorization": "Payment !!!"}
        )
        assert malformed.status_code == 402 and malformed.json()["type"].endswith("mpp_malformed")
        deep = {**JSON, "Authorization": "Payment " + mpp.b64url(b"[" * 5000)}
        nested = await http.post(URL, content=body, headers=deep)
        assert nested.status_code == 402 and nested.json()["type"].endswith("mpp_malformed")
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
        # the settlement recorded now, not by a push landing among the refusals below
        assert await service.app[ENGINE].confirm(
            elsewhere["x402"]["accepts"][0]["extra"]["paymentHash"]
        )
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


async def test_a_refused_mpp_credential_gets_402_with_a_fresh_offer(
    service: Service,
) -> None:
    """A refused MPP credential gets 401 with no WWW-Authenticate at all, and a malformed one
    is 401 too. RFC 9110 15.5.2: a 401 MUST carry WWW-Authenticate. draft-ryan-httpauth-payment
    ("Servers MUST return 402 with a fresh challenge ... when payment verification fails";
    malformed-credential, invalid-challenge, verification-failed are 402) and
    draft-lightning-charge-00 (Error Responses: malformed-credential is 400, unknown-challenge
    and invalid-preimage 401) disagree with each other, but with neither is a credential-less
    401 or a 401 for a malformed credential right: MPP clients are left with nothing to pay."""
    body = _body("forged mpp")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        wrong = "00" * 32  # not the invoice's preimage
        forged = await http.post(
            URL,
            content=body,
            headers={**JSON, "Authorization": _mpp_credential(offered["mpp"], wrong)},
        )
        junk = await http.post(
            URL, content=body, headers={**JSON, "Authorization": "Payment !!!not-base64!!!"}
        )
    schemes = [v.split(" ")[0] for v in forged.headers.get_list("WWW-Authenticate")]
    assert forged.status_code in (401, 402) and "Payment" in schemes, (
        forged.status_code,
        forged.headers.get_list("WWW-Authenticate"),
        forged.text[:200],
    )
    assert junk.status_code in (400, 402), (junk.status_code, junk.text[:200])


async def test_every_402_is_marked_no_store(service: Service) -> None:
    """draft-lightning-charge-00, Settlement Procedure: "Servers MUST include Cache-Control:
    no-store on all HTTP 402 responses" (the challenge holds a single-use invoice); the
    httpauth-payment draft's examples do the same. The 402 here has no Cache-Control."""
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        answer = await http.post(URL, content=_body("cache me"), headers=JSON)
    assert answer.status_code == 402
    assert "no-store" in answer.headers.get("Cache-Control", ""), dict(answer.headers)


async def test_x402_naming_an_unpaid_invoice_is_held_to_the_global_invoice_limit(
    lnbits: Any, emulator: Emulator, tmp_path: Path
) -> None:
    """Every x402 PAYMENT-SIGNATURE that names an invoice offered here but unpaid (or any
    decodable invoice not offered here) is answered with a fresh offer: a new LNbits invoice.
    Such requests are counted as Kind.L402, which has no "all callers" rule, so the global
    invoice limit (limit_invoices_total, which protects the LNbits rate limit settlement
    needs) never applies: a flood from many addresses mints without bound, no payment needed."""
    wallet = lnbits.create_wallet("satrouter")
    settings = service_settings(tmp_path, emulator, lnbits, wallet, limit_invoices_total="2/day")
    app = create_app(settings, engine_config=EngineConfig(sweep_interval=0.1))
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            body = _body("x402 flood")
            offered = await _offered(http, body)  # one invoice minted (1 of 2)
            signature = _x402_signature(offered["x402"], offered["problem"]["invoice"])
            answers = [
                await http.post(URL, content=body, headers={**JSON, "PAYMENT-SIGNATURE": signature})
                for _ in range(5)
            ]
    finally:
        await runner.cleanup()
    minted = [a for a in answers if a.status_code == 402 and "invoice" in a.json()]
    # at most one more invoice fits the global limit of 2; the rest must be 429
    assert len(minted) <= 1, [(a.status_code, a.json().get("type")) for a in answers]


async def test_no_payment_receipt_on_an_error_answer(service: Service) -> None:
    """draft-ryan-httpauth-payment, Receipt Status Semantics: "Servers MUST NOT return a
    Payment-Receipt header on error responses" (receipts only with 2xx). When every model
    fails the paid MPP request is answered 502 upstream_failed, and chat._render passes the
    ``answered`` headers (Payment-Receipt with status "success") into that Problem."""
    body = _body("mpp then upstream down")
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        offered = await _offered(http, body)
        paid = await service.pay(offered["problem"]["invoice"])
        service.emulator.state.faults.set(CHEAP, Fault(kind="bad_gateway"))
        answer = await http.post(
            URL,
            content=body,
            headers={**JSON, "Authorization": _mpp_credential(offered["mpp"], paid["preimage"])},
        )
    assert answer.status_code >= 400, answer.text[:200]
    assert "Payment-Receipt" not in answer.headers, (answer.status_code, dict(answer.headers))
    assert answer.json()["credit_macaroon"]  # the refund's token, which the receipt named


async def test_the_payer_with_the_preimage_gets_the_answer_after_an_x402_presentation(
    service: Service,
) -> None:
    """x402 on Lightning carries no proof of payment, only the invoice (public: it is in the
    402 and handed to whatever wallet pays it). Whoever presents a settled invoice first with
    the request's body gets the paid answer, and then the payer, presenting the preimage it
    alone holds as L402 (or MPP), is refused 409 payment_already_used for the request it paid.
    The stronger proof (the preimage) should always get the answer the payment bought."""
    body = _body("the payer's question")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        problem = offered["problem"]
        paid = await service.pay(problem["invoice"])  # the payer, who holds the preimage
        # someone who saw only the invoice (its wallet, a proxy, a log) presents it first
        signature = _x402_signature(offered["x402"], problem["invoice"])
        stolen = await http.post(
            URL, content=body, headers={**JSON, "PAYMENT-SIGNATURE": signature}
        )
        assert stolen.status_code == 200, stolen.text
        payer = await http.post(
            URL,
            content=body,
            headers={**JSON, "Authorization": f"L402 {problem['macaroon']}:{paid['preimage']}"},
        )
    assert payer.status_code == 200, (payer.status_code, payer.json().get("type"))


async def test_x402_lightning_requirements_and_payload_as_the_scheme_specifies(
    service: Service,
) -> None:
    """x402 specs/schemes/exact/scheme_exact_lightning.md: ``payTo`` is "Always \"anonymous\""
    (the service sends the node's public key), and verification step 4: "Verify
    ``payload.invoice`` matches ``payload.accepted.extra.invoice`` exactly (prevents invoice
    substitution attacks)" (the service never looks at ``accepted``)."""
    body = _body("x402 shapes")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        [accepted] = offered["x402"]["accepts"]
        problem = offered["problem"]
        await service.pay(problem["invoice"])
        other = await _offered(http, _body("another request"))
        signature = {
            "x402Version": 2,
            "accepted": {
                **accepted,
                "extra": {**accepted["extra"], "invoice": other["problem"]["invoice"]},
            },
            "payload": {"invoice": problem["invoice"]},
        }
        substituted = await http.post(
            URL,
            content=body,
            headers={
                **JSON,
                "PAYMENT-SIGNATURE": base64.b64encode(json.dumps(signature).encode()).decode(),
            },
        )
    assert accepted["payTo"] == "anonymous", accepted["payTo"]
    assert substituted.status_code in (400, 402), substituted.status_code


async def test_a_paid_request_that_failed_upstream_can_be_repeated(service: Service) -> None:
    """Every model fails: 502 "nothing was charged", the held price goes back as credit on the
    offer's L402 token. Repeating the same paid request (same MPP credential, once upstream is
    back) is refused 409 l402_already_used forever, so an MPP or x402 client, which holds no
    L402 macaroon, can neither get its answer nor reach its refund."""
    body = _body("mpp, upstream down, then back")
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        offered = await _offered(http, body)
        paid = await service.pay(offered["problem"]["invoice"])
        credential = {**JSON, "Authorization": _mpp_credential(offered["mpp"], paid["preimage"])}
        service.emulator.state.faults.set(CHEAP, Fault(kind="bad_gateway"))
        failed = await http.post(URL, content=body, headers=credential)
        assert failed.status_code == 502, failed.text[:200]
        service.emulator.state.faults.clear(None)
        again = await http.post(URL, content=body, headers=credential)
    assert again.status_code == 200, (again.status_code, again.text[:200])


async def test_an_x402_payment_that_failed_upstream_shows_its_credit_and_repeats_run_once(
    service: Service,
) -> None:
    """After 502 the x402 payer, which holds no macaroon, is shown the token's (its preimage
    reads the refund with it) and gets no PAYMENT-RESPONSE; repeats sent at once run once."""
    body = _body("x402, upstream down, then back")
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        offered = await _offered(http, body)
        problem = offered["problem"]
        paid = await service.pay(problem["invoice"])
        signature = {
            **JSON,
            "PAYMENT-SIGNATURE": _x402_signature(offered["x402"], problem["invoice"]),
        }
        service.emulator.state.faults.set(CHEAP, Fault(kind="bad_gateway"))
        failed = await http.post(URL, content=body, headers=signature)
        assert failed.status_code == 502, failed.text[:200]
        assert "PAYMENT-RESPONSE" not in failed.headers
        l402 = {"Authorization": f"L402 {failed.json()['credit_macaroon']}:{paid['preimage']}"}
        me = await http.get("/v1/accounts/me", headers=l402)
        assert me.status_code == 200, me.text
        assert me.json()["balance_msat"] == int(offered["x402"]["accepts"][0]["amount"])
        service.emulator.state.faults.clear(None)
        before = service.emulator.state.counters["completions"]
        repeats = await asyncio.gather(
            *(http.post(URL, content=body, headers=signature) for _ in range(3))
        )
        assert sorted(r.status_code for r in repeats)[0] == 200, [r.text for r in repeats]
        assert {r.status_code for r in repeats} <= {200, 409}
        again = await http.post(URL, content=body, headers=signature)
        assert again.status_code == 200 and again.headers["X-Satrouter-Replay"] == "true"
    assert service.emulator.state.counters["completions"] == before + 1
    assert (await service.check_ledger()).ok


async def test_refused_mpp_credentials_are_held_to_the_global_invoice_limit(
    lnbits: Any, emulator: Emulator, tmp_path: Path
) -> None:
    """A refused MPP credential gets a fresh offer; its invoice counts as an unpaid one."""
    wallet = lnbits.create_wallet("satrouter")
    settings = service_settings(tmp_path, emulator, lnbits, wallet, limit_invoices_total="2/day")
    app = create_app(settings, engine_config=EngineConfig(sweep_interval=0.1))
    runner, url = await serve(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            body = _body("mpp flood")
            offered = await _offered(http, body)  # one invoice minted (1 of 2)
            wrong = {**JSON, "Authorization": _mpp_credential(offered["mpp"], "00" * 32)}
            answers = [await http.post(URL, content=body, headers=wrong) for _ in range(4)]
    finally:
        await runner.cleanup()
    assert [a.status_code for a in answers] == [402, 429, 429, 429], [a.text for a in answers]


async def test_an_mpp_payment_a_risen_price_left_shows_its_credit(service: Service) -> None:
    """price_changed to an MPP payment: no receipt, and the token's macaroon in the body, with
    which the preimage reads the payment now credit."""
    engine = service.app[ENGINE]
    body = _body("mpp, then the price rises")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        paid = await service.pay(offered["problem"]["invoice"])
        engine.reconfigure(
            policy=PricingPolicy(engine.policy.markup_bps, engine.policy.fee + Msat(5000))
        )
        moved = await http.post(
            URL,
            content=body,
            headers={**JSON, "Authorization": _mpp_credential(offered["mpp"], paid["preimage"])},
        )
        assert moved.status_code == 402, moved.text
        assert moved.json()["type"].endswith("price_changed")
        assert "Payment-Receipt" not in moved.headers
        credit = {"Authorization": f"L402 {moved.json()['credit_macaroon']}:{paid['preimage']}"}
        me = await http.get("/v1/accounts/me", headers=credit)
    assert me.status_code == 200, me.text
    assert me.json()["balance_msat"] == int(offered["x402"]["accepts"][0]["amount"])


async def test_x402_refuses_an_expired_invoice(service: Service) -> None:
    """The scheme's step 7: an expired invoice is refused (a fresh offer), not looked up."""
    body = _body("x402, too late")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        offered = await _offered(http, body)
        made = await asyncio.to_thread(
            httpx.post,
            f"{service.lnbits.url}/api/v1/payments",
            json={"out": False, "amount": 5, "memo": "soon gone", "expiry": 1},
            headers={"X-Api-Key": service.agent.inkey},
        )
        made.raise_for_status()
        invoice = made.json()["bolt11"]
        while not decode_invoice(invoice).expired():
            await asyncio.sleep(0.2)
        headers = {**JSON, "PAYMENT-SIGNATURE": _x402_signature(offered["x402"], invoice)}
        refused = await http.post(URL, content=body, headers=headers)
    assert refused.status_code == 402, refused.text
    assert refused.json()["type"] == "urn:satrouter:problem:x402_expired"


def test_x402_names_the_network_of_the_invoice() -> None:
    """The scheme's network ids: mainnet's genesis, and its testnet id for any other network."""
    offered = x402.requirements(
        amount_msat=1000, invoice="lntb1", payment_hash="00" * 32, network="testnet", timeout=60
    )
    assert offered["network"] == "bip122:000000000933ea01ad0ee984209779ba"
    assert offered["payTo"] == "anonymous"
    main = x402.requirements(
        amount_msat=1000, invoice="lnbc1", payment_hash="00" * 32, network="mainnet", timeout=60
    )
    assert main["network"] == "bip122:000000000019d6689c085ae165831e93"
    signature = {"x402Version": 2, "scheme": "exact", "network": offered["network"]}
    signature |= {"payload": {"invoice": "lntb1"}, "accepted": offered}
    encoded = base64.b64encode(json.dumps(signature).encode()).decode()
    assert x402.parse_signature(encoded) == x402.Signature("lntb1", offered["network"])
