"""Cascade mode: a cheap model drafts, the draft is checked, a failed check escalates.

The checks cost nothing but a judge call: a draft fails when it is empty, cut short by
``max_tokens``, not the JSON the request asked for, hedged ("I'm not sure", "as an AI"), or
(where the model returns logprobs) when its mean token probability is under the policy's
``min_confidence``. When those pass and the policy names a judge model, the judge is asked
whether the draft answers the request; anything but "yes" fails it.

The judge sees the draft cut to a byte budget fixed when the task is quoted, so its call can
never cost more than was paid for.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from ..tasks.requests import ChatMessage
from ..upstream.openrouter import ChatResult
from ..upstream.schemas import ChatCompletion
from .fallback import AllModelsFailed, Attempt, FallbackRunner

#: The judge answers in a word.
JUDGE_MAX_TOKENS = 3
JUDGE_SYSTEM = (
    "You check answers written by another assistant. Reply with one word: yes if the answer "
    "fully and correctly does what the request asks, no otherwise."
)

_HEDGES = re.compile(
    r"\b(?:i'?m not (?:sure|certain)|i am not (?:sure|certain)|i don'?t know|i do not know|"
    r"i cannot (?:be sure|determine|answer|help)|i can'?t (?:be sure|determine|answer|help)|"
    r"i'?m unable|i am unable|as an ai\b|not enough information|it'?s (?:unclear|hard to say)|"
    r"it is (?:unclear|hard to say)|i'?m afraid i)",
    re.IGNORECASE,
)
_ASKS_JSON = re.compile(r"\bjson\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on one draft: passed, why not, and the confidence when it was measured."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    confidence: float | None = None
    judge: str | None = None  # the judge's word, when a judge was asked

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wants_json(request: dict[str, Any]) -> bool:
    """Whether the request asks for JSON: a JSON response format, or the word in its ask."""
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        return True
    return bool(_ASKS_JSON.search(last_user_text(request.get("messages") or [])))


def last_user_text(messages: list[Any]) -> str:
    """The text of the last user message of a stored (already validated) request body."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return ChatMessage.model_validate(message).text
    return ""


def confidence(completion: ChatCompletion) -> float | None:
    """The mean probability of the draft's tokens, when the model returned logprobs."""
    if not completion.choices:
        return None
    logprobs = (completion.choices[0].model_extra or {}).get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    values = [
        float(t["logprob"])
        for t in content or []
        # Parsed bodies carry numbers as Decimal (see service.upstream.schemas.loads).
        if isinstance(t, dict) and isinstance(t.get("logprob"), int | float | Decimal)
    ]
    if not values:
        return None
    return sum(math.exp(v) for v in values) / len(values)


def _is_json(text: str) -> bool:
    """JSON, bare or in a Markdown code fence."""
    body = text.strip()
    if len(body) >= 6 and body.startswith("```") and body.endswith("```"):
        body = body[3:-3].removeprefix("json")
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def check_draft(
    completion: ChatCompletion, request: dict[str, Any], *, min_confidence: float
) -> Check:
    """The free checks on a draft (the judge, when there is one, comes after)."""
    text = completion.text.strip()
    reasons: list[str] = []
    if not text:
        reasons.append("empty")
    finish = completion.choices[0].finish_reason if completion.choices else None
    if finish == "length":
        reasons.append("cut_short")
    if text and wants_json(request) and not _is_json(text):
        reasons.append("not_json")
    if _HEDGES.search(text):
        reasons.append("hedged")
    measured = confidence(completion)
    if measured is not None and measured < min_confidence:
        reasons.append("low_confidence")
    return Check(not reasons, reasons, None if measured is None else round(measured, 4))


def judged(check: Check, reply: str) -> Check:
    """``check`` with the judge's reply applied."""
    word = (re.findall(r"[a-z]+", reply.lower()) or [""])[0]
    if word == "yes":
        return Check(check.passed, check.reasons, check.confidence, word)
    return Check(False, [*check.reasons, "judge_rejected"], check.confidence, word or "-")


def cut(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never inside a character."""
    return text.encode()[:max_bytes].decode("utf-8", errors="ignore")


def judge_messages(request_text: str, draft: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": f"Request:\n{request_text}\n\nAnswer:\n{draft}"},
    ]


@dataclass(slots=True)
class Outcome:
    """What a cascade did: the answer (None if every step failed), each step, every call that
    ran (to reconcile and pay for) and every attempt."""

    answer: ChatResult | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    calls: list[ChatResult] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "escalated": len(self.steps) > 1,
            "answered_by": self.answer.completion.model if self.answer else None,
        }


async def run(runner: FallbackRunner, spec: dict[str, Any]) -> Outcome:
    """Draft on the first step; check it; escalate step by step until a draft passes or the
    last step answers. ``spec`` is the stored ``cascade`` part of a priced request."""
    out = Outcome()
    for n, step in enumerate(spec["steps"]):
        last = n == len(spec["steps"]) - 1
        body = step["body"] if last else {**step["body"], "logprobs": True}
        try:
            result, tried = await runner.chat(body)
        except AllModelsFailed as exc:  # a step that cannot answer escalates too
            out.attempts.extend(exc.attempts)
            out.steps.append({"tier": step["tier"], "error": str(exc)})
            continue
        out.attempts.extend(tried)
        out.calls.append(result)
        out.answer = result
        if last:
            out.steps.append({"tier": step["tier"], "model": result.completion.model})
            break
        check = check_draft(result.completion, step["body"], min_confidence=spec["min_confidence"])
        if check.passed and step["judge"]:
            check = await _judge(runner, step, result, check, out)
        out.steps.append(
            {
                "tier": step["tier"],
                "model": result.completion.model,
                "draft": result.completion.text,
                "check": check.as_dict(),
            }
        )
        if check.passed:
            break
    return out


async def _judge(
    runner: FallbackRunner, step: dict[str, Any], draft: ChatResult, check: Check, out: Outcome
) -> Check:
    """Ask the judge about a draft that passed the free checks. A judge that cannot be
    reached fails the draft: escalating costs money, a wrong answer costs the agent."""
    ask = last_user_text(step["body"]["messages"])
    text = cut(draft.completion.text, step["draft_bytes"])
    body = {**step["judge"], "messages": judge_messages(ask, text)}
    try:
        verdict, tried = await runner.chat(body)
    except AllModelsFailed as exc:
        out.attempts.extend(exc.attempts)
        return judged(check, "")
    out.attempts.extend(tried)
    out.calls.append(verdict)
    return judged(check, verdict.completion.text)
