"""The task classifier: what kind of task a prompt is, and how hard, without calling a model.

Features are read from the prompt's text and the requested output size: its length, code
fences and code-like lines, mathematics, reasoning cues, how many constraints it lists, words
that mark depth or stakes, and words that mark a quick job. The kind is the strongest signal
(code, maths, reasoning, extraction, summarisation, translation, writing; chat otherwise); the
complexity is a score from the rest. Classifying is pure string work (well under a millisecond
for ordinary prompts) so it runs on every ``auto`` request before it is priced.

When in doubt it errs upwards: sending a hard task to a weak model fails the agent, while
sending an easy one to a strong model only costs more. The policy's ``[classes]`` table maps
each class (``kind.complexity`` or ``kind``) to a tier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .classifier_words import (
    ARITHMETIC,
    CODE_ASK,
    CODE_LINE,
    EASY,
    EXPLAIN,
    EXTRACTION,
    FENCE,
    FENCED,
    LIST_ITEM,
    MATERIAL,
    MATHS,
    NUMBER,
    PROOF,
    REASONING,
    SIZE,
    STAKES,
    SUBSTANTIAL,
    SUMMARY,
    TASK_VERBS,
    TRANSLATION,
    WEIGHT,
    WRITING,
)

KINDS = (
    "chat",
    "extraction",
    "summarisation",
    "translation",
    "writing",
    "code",
    "maths",
    "reasoning",
)
COMPLEXITIES = ("simple", "moderate", "complex")


@dataclass(frozen=True, slots=True)
class Features:
    """What the classifier read from a prompt (recorded on the task with its class)."""

    chars: int  # the whole prompt
    ask_chars: int  # the last message, the agent's own words
    output_tokens: int | None  # max_tokens, when the caller set it
    code_fences: int
    code_lines: int
    code_asks: int
    maths: int
    proof: int
    numbers: int
    reasoning: int
    extraction: int
    summary: int
    translation: int
    writing: int
    substantial: int
    explain: int
    stakes: int
    tasks: int  # distinct things asked: analyse, list, propose, ...
    weight: int
    easy: int
    aspects: int  # things the prompt asks to cover (commas and list items)
    material: bool  # the prompt carries text to work on (quoted, or after a colon)
    words_asked: int  # an answer length the prompt names, in words


@dataclass(frozen=True, slots=True)
class TaskClass:
    kind: str
    complexity: str
    score: int
    features: Features

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.complexity}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "complexity": self.complexity,
            "score": self.score,
            "features": asdict(self.features),
        }


def _size_asked(text: str) -> int:
    words = 0
    for match in SIZE.finditer(text):
        count, paragraphs, minutes = match.groups()
        if count:
            words = max(words, int(count.replace(",", "")))
        elif paragraphs:
            words = max(words, 250)
        elif minutes:
            words = max(words, 130 * int(minutes))
    return words


def features(texts: Sequence[str], output_tokens: int | None = None) -> Features:
    """Read the features of a prompt: the texts of its messages, and its ``max_tokens``."""
    text = "\n".join(texts)
    ask = texts[-1] if texts else ""
    # What the agent asks is in its own words, at the start or the end of its message; a
    # pasted document in between should not drown them.
    head = ask if len(ask) <= 700 else ask[:500] + "\n" + ask[-200:]
    prose = FENCED.sub(" ", head)
    return Features(
        chars=len(text),
        ask_chars=len(ask),
        output_tokens=output_tokens,
        code_fences=len(FENCE.findall(text)) // 2,
        code_lines=len(CODE_LINE.findall(text)),
        code_asks=len(CODE_ASK.findall(prose)),
        maths=len(MATHS.findall(prose)) + len(ARITHMETIC.findall(prose)),
        proof=len(PROOF.findall(prose)),
        numbers=len(NUMBER.findall(prose)),
        reasoning=len(REASONING.findall(prose)),
        extraction=len(EXTRACTION.findall(prose)),
        summary=len(SUMMARY.findall(prose)),
        translation=len(TRANSLATION.findall(prose)),
        writing=len(WRITING.findall(prose)),
        substantial=len(SUBSTANTIAL.findall(prose)),
        explain=len(EXPLAIN.findall(prose)),
        stakes=len({m.lower() for m in STAKES.findall(prose)}),
        tasks=len({m.lower() for m in TASK_VERBS.findall(prose)}),
        weight=len({m.lower() for m in WEIGHT.findall(prose)}),
        easy=len(EASY.findall(prose)),
        aspects=prose.count(",") + len(LIST_ITEM.findall(prose)),
        material=bool(MATERIAL.search(ask)),
        words_asked=_size_asked(prose),
    )


def _kind(f: Features) -> str:
    if f.code_fences or f.code_lines >= 3:
        return "code"
    if f.code_asks >= 2:
        return "code"
    light = f.stakes < 2  # a job with stakes is never a light one
    if light and f.translation:
        return "translation"
    if light and f.summary and f.summary >= f.reasoning:
        return "summarisation"
    if light and f.extraction and f.extraction > f.reasoning + f.maths:
        return "extraction"
    if f.code_asks:
        return "code"
    maths = f.proof or f.maths >= 2 or (f.maths and (f.reasoning or f.numbers))
    if maths and not f.stakes:  # "prove which bug it is" in an incident is not mathematics
        return "maths"
    if f.reasoning >= 2 or (f.reasoning and f.stakes):
        return "reasoning"
    if f.writing:
        return "writing"
    if f.reasoning:
        return "reasoning"
    return "chat"


def _score(kind: str, f: Features) -> int:
    score = 2 * f.stakes + f.weight + min(1, f.substantial) + min(1, f.explain)
    score += f.stakes > 0 and f.aspects >= 3  # many sides of a weighty question
    score += f.tasks >= 3  # several things asked at once
    asked = max(f.words_asked, int((f.output_tokens or 0) * 0.75))
    score += (asked >= 150) + (asked >= 800)
    if kind in ("extraction", "summarisation", "translation"):
        # Here the prompt is mostly the material: only a long one makes the job bigger...
        score += f.ask_chars > 600
        # ...unless there is none: summarising a topic from knowledge is explaining it.
        score += kind == "summarisation" and not f.material
    else:
        score += (f.ask_chars > 350) + (f.ask_chars > 1500) + (f.chars > 6000)
        score += f.aspects >= 6
    return score - min(2, f.easy)


def classify(texts: Sequence[str], output_tokens: int | None = None) -> TaskClass:
    """The class of a prompt, from the texts of its messages and its requested output size."""
    f = features(texts, output_tokens)
    kind = _kind(f)
    score = _score(kind, f)
    complexity = "simple" if score <= 0 else "moderate" if score <= 2 else "complex"
    return TaskClass(kind, complexity, score, f)
