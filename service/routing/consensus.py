"""Multi-model consensus: ask several models, group their answers, report the agreement.

Two answers agree when they are the same JSON value (objects compared whole, key order
ignored), the same verdict (yes/no, true/false), or, for free text, when their normalised forms
are at least ``SIMILAR`` alike (difflib's ratio). Answers are grouped greedily; the largest group
is the majority (the earliest on ties); agreement is its share of the answers, and a task is
flagged when that is under its threshold.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from ..upstream.openrouter import ChatResult
from .fallback import AllModelsFailed, Attempt, FallbackRunner

SIMILAR = 0.85
_VERDICTS = {
    "yes": "yes",
    "true": "yes",
    "correct": "yes",
    "no": "no",
    "false": "no",
    "incorrect": "no",
}
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z]+")


def _normalised(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower()).strip(" .!")


def _structured(text: str) -> tuple[str, str] | None:
    """A JSON value, or a verdict word, or None for free text."""
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            return ("json", json.dumps(json.loads(stripped), sort_keys=True))
        except ValueError:
            return None
    first = _WORD.match(stripped.lower())
    if first and first.group() in _VERDICTS and len(stripped.split()) <= 3:
        return ("verdict", _VERDICTS[first.group()])
    return None


def agree(a: str, b: str) -> bool:
    left, right = _structured(a), _structured(b)
    if left is not None or right is not None:
        return left == right
    return SequenceMatcher(None, _normalised(a), _normalised(b)).ratio() >= SIMILAR


@dataclass(frozen=True, slots=True)
class Verdict:
    agreement: float
    majority: str
    majority_models: list[str]
    groups: list[list[str]]  # models, grouped by agreeing answers
    flagged: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "agreement": round(self.agreement, 4),
            "majority": self.majority,
            "majority_models": self.majority_models,
            "groups": self.groups,
            "flagged": self.flagged,
        }


def decide(answers: list[tuple[str, str]], threshold: float) -> Verdict:
    """``answers`` are (model, text) pairs, at least one."""
    groups: list[list[tuple[str, str]]] = []
    for model, text in answers:
        for group in groups:
            if agree(group[0][1], text):
                group.append((model, text))
                break
        else:
            groups.append([(model, text)])
    majority = max(groups, key=len)  # max keeps the first of equal sizes
    agreement = len(majority) / len(answers)
    return Verdict(
        agreement,
        majority[0][1],
        [m for m, _ in majority],
        [[m for m, _ in g] for g in groups],
        agreement < threshold,
    )


@dataclass(slots=True)
class Outcome:
    """What a consensus did: the answers that came back, the verdict on them, the answer of
    the majority (None when every model failed) and every attempt."""

    answered: list[ChatResult] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    verdict: Verdict | None = None
    majority: ChatResult | None = None

    def report(self) -> dict[str, Any]:
        assert self.verdict is not None
        return {
            **self.verdict.as_dict(),
            "answers": [
                {"model": r.completion.model, "text": r.completion.text} for r in self.answered
            ],
        }


async def run(runner: FallbackRunner, spec: dict[str, Any]) -> Outcome:
    """Ask every model of ``spec`` (the stored ``consensus`` part of a priced request) at once;
    a model that fails is left out of the vote."""
    results = await asyncio.gather(
        *(runner.chat(body) for body in spec["calls"]), return_exceptions=True
    )
    out = Outcome()
    for result in results:
        if isinstance(result, AllModelsFailed):
            out.attempts.extend(result.attempts)
        elif isinstance(result, BaseException):
            raise result
        else:
            out.answered.append(result[0])
            out.attempts.extend(result[1])
    if out.answered:
        out.verdict = decide(
            [(r.completion.model, r.completion.text) for r in out.answered],
            float(spec["threshold"]),
        )
        first = out.verdict.majority_models[0]
        out.majority = next(r for r in out.answered if r.completion.model == first)
    return out
