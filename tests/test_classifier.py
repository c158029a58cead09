"""The task classifier, ``auto`` routing through the paid pipeline, and the labelled set."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.emulator.app import load_catalog
from service.http.keys import STORE
from service.http.schemas import ChatMessage
from service.routing import evaluation
from service.routing.classifier import COMPLEXITIES, KINDS, classify
from service.routing.policy import builtin
from service.upstream.catalog import Catalog

from .conftest import Service

CATALOG = Catalog.from_response(load_catalog())
POLICY = builtin(CATALOG.__contains__)


def _price(model: str) -> Any:
    info = CATALOG.get(model)
    assert info is not None
    return info.price


@pytest.mark.parametrize(
    ("prompt", "kind", "complexity"),
    [
        ("What is the capital of Peru?", "chat", "simple"),
        ("Extract every date from: 'due 3 May, paid 9 May'. Return JSON.", "extraction", "simple"),
        ("Translate into French: 'the shop opens at nine'", "translation", "simple"),
        ("Summarise in one sentence: 'the train is late again'", "summarisation", "simple"),
        ("Write a haiku about snow.", "writing", "simple"),
        ("Write a Python function that returns the median of a list.", "code", "simple"),
        ("Fix this:\n```js\nconst x = [1, 2\n```", "code", "simple"),
        ("Solve for x: 5x - 3 = 2x + 9. Show your working.", "maths", "simple"),
        (
            "Design a distributed job scheduler that survives the loss of a data centre, "
            "with exactly-once execution. Discuss the trade-offs and the failure modes.",
            "reasoning",
            "complex",
        ),
    ],
)
def test_kinds_and_complexity(prompt: str, kind: str, complexity: str) -> None:
    task_class = classify([prompt])
    assert (task_class.kind, task_class.complexity) == (kind, complexity)


def test_the_requested_output_size_raises_the_complexity() -> None:
    prompt = "Write a limerick about a lighthouse keeper."
    assert classify([prompt]).complexity == "simple"
    assert classify([prompt], output_tokens=4000).complexity != "simple"
    assert classify([prompt + " About 1,200 words."]).complexity != "simple"


def test_a_pasted_document_does_not_drown_the_ask() -> None:
    document = "The committee met and discussed the budget at length. " * 200
    task_class = classify([f"Summarise the key points of this:\n\n{document}"])
    assert task_class.kind == "summarisation"


def test_policy_classes_pick_tiers() -> None:
    assert POLICY.tier_for(classify(["Hi there!"])) == "economy"
    assert POLICY.tier_for(classify(["Implement a Go function that reverses a string"])) == "code"
    assert POLICY.tier_for(classify(["What is the derivative of x^2 * sin(x)?"])) == "reasoning"
    hard = (
        "Perform a thorough security review of our payment service's architecture: threat "
        "model, vulnerabilities, and the trade-offs of each fix."
    )
    assert POLICY.tier_for(classify([hard])) == "premium"


def test_the_labelled_set() -> None:
    prompts = evaluation.prompts()
    assert len(prompts) >= 200
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.prompt for p in prompts}) == len(prompts)
    assert {p.tier for p in prompts} == set(evaluation.LABELS)
    assert {classify([p.prompt]).kind for p in prompts} == set(KINDS)
    assert set(COMPLEXITIES) == {classify([p.prompt]).complexity for p in prompts}


def test_auto_routing_on_the_labelled_set() -> None:
    result = evaluation.evaluate(POLICY, _price)
    # Premium-deserving prompts are kept on premium...
    assert result.under_routed("premium") <= 0.05
    # ...and routing costs no more than sending every prompt to the tier it deserves.
    assert result.cost_routed_usd <= result.cost_labelled_usd * 1.05
    # The shipped policy's promise: at least 70 % cheaper than always-premium.
    assert result.saving >= 0.70
    holdout = [r for r in result.routed if r.prompt.split == "holdout"]
    assert len(holdout) >= 50
    assert result.accuracy("holdout") >= 0.85
    # The comparison is real: always-premium costs what premium costs for every prompt.
    premium = _price(POLICY.tiers["premium"][0])
    one = evaluation.Prompt("x", "economy", "hello")
    alone = evaluation.evaluate(POLICY, _price, [one])
    expected = premium.cost(9, evaluation.ANSWER_TOKENS["economy"])  # 2 prompt tokens + 7
    assert alone.cost_premium_usd == expected.value / 1e9
    assert alone.cost_routed_usd < alone.cost_premium_usd
    assert "| classifier accuracy" in evaluation.report(result)


CODE = [{"role": "user", "content": "Write a Python function that sorts a list. [[tokens=5]]"}]
GREETING = [{"role": "user", "content": "Hi! How are you? [[tokens=5]]"}]


@pytest.mark.lnbits
async def test_auto_routes_by_class_and_records_it(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        account = await service.funded_account(http, 2_000)
        quote = (await http.post("/v1/quote", json={"messages": CODE})).json()
        assert (quote["tier"], quote["task_class"]) == ("code", "code.simple")
        coded = await http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": CODE},
            headers=account["auth"],
        )
        greeted = await http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": GREETING},
            headers=account["auth"],
        )
        pinned = await http.post(
            "/v1/chat/completions",
            json={"model": "openai/gpt-4o-mini", "messages": CODE},
            headers=account["auth"],
        )
    assert coded.status_code == 200, coded.text
    assert coded.json()["model"] == POLICY.tiers["code"][0]
    assert coded.headers["X-Satrouter-Class"] == "code.simple"
    assert coded.headers["X-Satrouter-Tier"] == "code"
    assert greeted.json()["model"] == POLICY.tiers["economy"][0]
    assert greeted.headers["X-Satrouter-Class"] == "chat.simple"
    assert pinned.json()["model"] == "openai/gpt-4o-mini"  # a pinned model is never reclassified
    assert "X-Satrouter-Class" not in pinned.headers
    async with service.app[STORE].read() as tx:
        stored = await tx.task(coded.headers["X-Satrouter-Task"])
        other = await tx.task(pinned.headers["X-Satrouter-Task"])
    assert stored is not None and other is not None
    assert stored.data["task_class"] == "code.simple"
    assert stored.data["tier"] == "code"
    assert stored.data["classification"]["features"]["code_asks"] >= 1
    assert "task_class" not in other.data
    assert json.dumps(stored.data["classification"])  # recorded as plain JSON


def test_messages_with_parts_are_classified_by_their_text() -> None:
    parts = ChatMessage(
        role="user",
        content=[
            {"type": "text", "text": "Translate into French: 'good night'"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    )
    assert parts.text == "Translate into French: 'good night'"
    assert classify([parts.text]).kind == "translation"
