"""Cascade mode: a cheap draft, checked, escalated when the check fails, every call paid."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources
from typing import Any

import httpx
import pytest

from service.emulator.app import load_catalog
from service.http.keys import ENGINE, STORE
from service.routing.cascade import check_draft, cut, judged
from service.routing.policy import PolicyHolder, builtin, parse
from service.upstream.catalog import Catalog
from service.upstream.schemas import ChatCompletion

from .conftest import Service, task_until

KNOWN = Catalog.from_response(load_catalog()).__contains__
POLICY = builtin(KNOWN)
assert POLICY.cascade is not None
DRAFTER = POLICY.tiers[POLICY.cascade.steps[0]][0]
ESCALATED = POLICY.tiers[POLICY.cascade.steps[-1]][0]
JUDGE = "openai/gpt-4o-mini"


def _completion(text: str, finish: str = "stop", logprob: float | None = None) -> ChatCompletion:
    choice: dict[str, Any] = {"index": 0, "message": {"content": text}, "finish_reason": finish}
    if logprob is not None:
        choice["logprobs"] = {"content": [{"token": "a", "logprob": logprob}] * 3}
    return ChatCompletion.model_validate({"id": "g", "model": "m", "choices": [choice]})


ASK = {"messages": [{"role": "user", "content": "Name a colour."}]}
ASK_JSON = {"messages": [{"role": "user", "content": "Return JSON with the colour."}]}


@pytest.mark.parametrize(
    ("completion", "request_body", "reasons"),
    [
        (_completion("Blue."), ASK, []),
        (_completion(""), ASK, ["empty"]),
        (_completion("Blue, green and", finish="length"), ASK, ["cut_short"]),
        (_completion("colour: blue"), ASK_JSON, ["not_json"]),
        (_completion('```json\n{"colour": "blue"}\n```'), ASK_JSON, []),
        (_completion("I'm not sure, maybe blue?"), ASK, ["hedged"]),
        (_completion("As an AI I cannot see colours."), ASK, ["hedged"]),
        (_completion("Blue.", logprob=-2.0), ASK, ["low_confidence"]),  # p = 0.14
        (_completion("Blue.", logprob=-0.05), ASK, []),  # p = 0.95
    ],
)
def test_free_checks(
    completion: ChatCompletion, request_body: dict[str, Any], reasons: list[str]
) -> None:
    check = check_draft(completion, request_body, min_confidence=0.5)
    assert check.reasons == reasons
    assert check.passed is (not reasons)


def test_judge_verdicts_and_the_draft_budget() -> None:
    passed = check_draft(_completion("Blue."), ASK, min_confidence=0.5)
    assert judged(passed, "Yes.").passed
    assert not judged(passed, "No, it names no colour").passed
    assert judged(passed, "maybe").reasons == ["judge_rejected"]
    assert cut("naïve", 3) == "na"  # never half a character
    assert cut("blue", 100) == "blue"


async def _cascade(service: Service, content: str, **extra: Any) -> tuple[dict[str, Any], Any]:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        created = await http.post(
            "/v1/tasks",
            json={"messages": [{"role": "user", "content": content}], "model": "cascade", **extra},
        )
        assert created.status_code == 201, created.text
        task = created.json()
        await service.pay(task["invoice"]["bolt11"])
        done: dict[str, Any] = await task_until(http, task, "reconciled")
    async with service.app[STORE].read() as tx:
        stored = await tx.task(task["id"])
    assert stored is not None
    return {**done, "quoted": task["price"]["total_msat"]}, stored


def _paid_for_every_call(stored: Any) -> None:
    inline = sum(Decimal(c["inline_cost_usd"]) for c in stored.data["calls"])
    assert stored.data["cost_nusd"] == int(inline * 10**9)


@pytest.mark.lnbits
async def test_a_good_draft_is_the_answer_and_the_rest_is_change(service: Service) -> None:
    done, stored = await _cascade(service, "Name a colour. [[tokens=5]]")
    report = done["cascade"]
    assert report["escalated"] is False
    assert report["answered_by"] == DRAFTER
    assert report["steps"][0]["check"]["passed"] is True
    assert report["steps"][0]["check"]["confidence"] == 0.9  # the emulator's logprobs
    assert report["steps"][0]["draft"] == done["result"]["choices"][0]["message"]["content"]
    assert done["result"]["cascade"] == report  # the kept answer is the one the caller got
    assert len(stored.data["calls"]) == 1
    _paid_for_every_call(stored)
    # The quote covered the premium step too; only the draft ran, so most comes back.
    assert done["change_msat"] > done["charge_msat"]
    assert done["charge_msat"] + done["change_msat"] == done["quoted"]
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_a_doubtful_draft_escalates_and_both_calls_are_paid(service: Service) -> None:
    done, stored = await _cascade(
        service, f"Name a colour. [[tokens=5]] [[confidence@{DRAFTER}=0.2]]"
    )
    report = done["cascade"]
    assert report["escalated"] is True
    assert report["answered_by"] == ESCALATED
    assert report["steps"][0]["check"] == {
        "passed": False,
        "reasons": ["low_confidence"],
        "confidence": 0.2,
        "judge": None,
    }
    assert report["steps"][0]["model"] == DRAFTER
    assert [c["model"] for c in stored.data["calls"]] == [DRAFTER, ESCALATED]
    _paid_for_every_call(stored)
    assert done["model"] == ESCALATED
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_json_that_is_not_json_escalates(service: Service) -> None:
    done, _ = await _cascade(service, f"Return JSON with a colour. [[reply@{DRAFTER}:blue]]")
    assert done["cascade"]["steps"][0]["check"]["reasons"] == ["not_json"]
    assert done["cascade"]["answered_by"] == ESCALATED


def _with_judge(service: Service) -> None:
    text = resources.files("service.routing").joinpath("default_policy.toml").read_text()
    policy = parse(text.replace('judge = ""', f'judge = "{JUDGE}"'), KNOWN)
    service.app[ENGINE].reconfigure(routing=PolicyHolder(policy, None, KNOWN))


@pytest.mark.lnbits
async def test_the_judge_decides_and_its_call_is_paid(service: Service) -> None:
    _with_judge(service)
    rejected, stored = await _cascade(service, f"Name a colour. [[reply@{JUDGE}:No]]")
    check = rejected["cascade"]["steps"][0]["check"]
    assert (check["passed"], check["judge"], check["reasons"]) == (False, "no", ["judge_rejected"])
    assert [c["model"] for c in stored.data["calls"]] == [DRAFTER, JUDGE, ESCALATED]
    _paid_for_every_call(stored)
    accepted, stored = await _cascade(service, f"Name a colour. [[reply@{JUDGE}:Yes]]")
    assert accepted["cascade"]["escalated"] is False
    assert accepted["cascade"]["steps"][0]["check"]["judge"] == "yes"
    assert [c["model"] for c in stored.data["calls"]] == [DRAFTER, JUDGE]
    # The judge saw the request and the draft, nothing else.
    judged_body = next(
        r["body"]
        for r in reversed(service.emulator.state.requests)
        if r["body"].get("model") == JUDGE
    )
    assert "Name a colour." in judged_body["messages"][1]["content"]
    assert judged_body["max_tokens"] == 3
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_cascade_over_chat_completions_streams_the_answer(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        account = await service.funded_account(http, 2_000)
        body = {
            "model": "cascade",
            "stream": True,
            "messages": [{"role": "user", "content": "Name a colour. [[reply:Blue]]"}],
        }
        response = await http.post("/v1/chat/completions", json=body, headers=account["auth"])
        capped = await http.post(
            "/v1/chat/completions",
            json={**body, "max_price_msat": 1500},
            headers=account["auth"],
        )
    assert response.status_code == 200
    assert response.headers["X-Satrouter-Tier"] == "cascade"
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == (
        "Blue"
    )
    assert events[-1]["cascade"]["answered_by"] == DRAFTER
    assert response.text.rstrip().endswith("data: [DONE]")
    # The caller's cap applies to the whole cascade, not to each step.
    assert capped.status_code == 402
    assert capped.json()["type"].endswith("over_max_price")


@pytest.mark.lnbits
async def test_a_policy_without_a_cascade_refuses_it(service: Service) -> None:
    text = resources.files("service.routing").joinpath("default_policy.toml").read_text()
    without = text[: text.index("[cascade]")] + text[text.index("[budget]") :]
    service.app[ENGINE].reconfigure(routing=PolicyHolder(parse(without, KNOWN), None, KNOWN))
    async with httpx.AsyncClient(base_url=service.url) as http:
        refused = await http.post(
            "/v1/tasks", json={"messages": [{"role": "user", "content": "hi"}], "model": "cascade"}
        )
    assert refused.status_code == 400
    assert refused.json()["type"].endswith("cascade_unavailable")
