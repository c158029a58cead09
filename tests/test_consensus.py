"""Multi-model consensus: agreement, majority, flags, and paying for every call."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from service.emulator.faults import Fault
from service.http.keys import ENGINE, STORE
from service.routing.consensus import agree, decide

from .conftest import Service, task_until

A, B, C = "meta-llama/llama-3.1-8b-instruct", "openai/gpt-4o-mini", "qwen/qwen-2.5-7b-instruct"


def test_what_counts_as_agreeing() -> None:
    assert agree('{"a": 1, "b": [2]}', '{ "b": [2], "a": 1 }')
    assert not agree('{"a": 1}', '{"a": 2}')
    assert agree("Yes.", "yes")
    assert agree("True", "Yes")
    assert not agree("No", "Yes")
    assert agree("The capital of France is Paris.", "the capital of france is paris")
    assert not agree("The capital of France is Paris.", "Lyon is the capital.")


def test_majority_and_flag() -> None:
    verdict = decide([("a", "yes"), ("b", "no"), ("c", "Yes.")], threshold=0.9)
    assert verdict.majority == "yes"
    assert verdict.majority_models == ["a", "c"]
    assert verdict.groups == [["a", "c"], ["b"]]
    assert round(verdict.agreement, 2) == 0.67
    assert verdict.flagged
    assert not decide([("a", "42"), ("b", "42")], threshold=0.9).flagged


async def _run(service: Service, content: str, **consensus: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        created = await http.post(
            "/v1/tasks",
            json={
                "messages": [{"role": "user", "content": content}],
                "consensus": {"models": [A, B, C], **consensus},
            },
        )
        assert created.status_code == 201, created.text
        task = created.json()
        await service.pay(task["invoice"]["bolt11"])
        done: dict[str, Any] = await task_until(http, task, "reconciled")
    return {**done, "quoted": task["price"]["total_msat"]}


@pytest.mark.lnbits
async def test_agreeing_models_and_the_price_of_three_calls(service: Service) -> None:
    done = await _run(service, "What is 6 x 7? [[reply:The answer is 42.]]")
    report = done["consensus"]
    assert report["agreement"] == 1.0
    assert report["majority"] == "The answer is 42."
    assert not report["flagged"]
    assert done["result"]["choices"][0]["message"]["content"] == "The answer is 42."
    assert done["result"]["consensus"] == report  # the kept answer is the one the caller got
    async with service.app[STORE].read() as tx:
        stored = await tx.task(done["id"])
    assert stored is not None
    assert len(stored.data["calls"]) == 3
    # Paid as the sum of its calls: each call's inline cost at the emulator's prices, summed.
    costs = {c["model"]: c["inline_cost_usd"] for c in stored.data["calls"]}
    assert stored.data["cost_nusd"] == int(sum(Decimal(v) for v in costs.values()) * 10**9)
    assert done["quoted"] >= 3 * 1000  # three fees at least
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_disagreement_is_flagged(service: Service) -> None:
    done = await _run(service, f"Is it safe? [[reply:Yes]] [[reply@{C}:No]]", threshold=0.9)
    report = done["consensus"]
    assert report["majority"] == "Yes"
    assert report["groups"] == [[A, B], [C]]
    assert report["flagged"] is True


@pytest.mark.lnbits
async def test_a_failing_model_leaves_the_others_to_agree(service: Service) -> None:
    service.emulator.state.faults.set(B, Fault(kind="bad_gateway"))
    done = await _run(service, "Capital of France? [[reply:Paris]]")
    assert [a["model"] for a in done["consensus"]["answers"]] == [A, C]
    assert done["consensus"]["agreement"] == 1.0


@pytest.mark.lnbits
async def test_a_tier_lends_its_first_n_models(service: Service) -> None:
    done = await _run(
        service, "Capital of France? [[reply:Paris]]", models=None, tier="premium", n=2
    )
    premium = service.app[ENGINE].routing.policy.tiers["premium"]
    assert [a["model"] for a in done["consensus"]["answers"]] == list(premium[:2])
    assert done["consensus"]["agreement"] == 1.0
