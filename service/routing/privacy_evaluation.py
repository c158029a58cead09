"""How well the privacy scan does on the shipped labelled corpus.

``privacy_corpus.jsonl`` holds strings written for satrouter (``benchmarks/privacy_corpus.py``
makes it): sensitive items of every kind the scan looks for, each labelled with its kind, and
benign look-alikes labelled with none. Each string is scanned on its own.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources

from .privacy import Detector

#: The least recall each kind must keep, and the most benign strings that may be flagged.
RECALL_TARGETS = {
    "payment_card": 0.98,
    "iban": 0.98,
    "api_key": 0.98,
    "seed_phrase": 0.98,
    "private_key": 0.98,
    "email": 0.95,
    "phone": 0.95,
}
MAX_BENIGN_FLAGGED = 0.01


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    group: str
    text: str
    kinds: frozenset[str]


def corpus() -> list[Item]:
    text = resources.files("service.routing").joinpath("privacy_corpus.jsonl").read_text()
    items = []
    for line in text.splitlines():
        if line.strip():
            data = json.loads(line)
            items.append(Item(data["id"], data["group"], data["text"], frozenset(data["kinds"])))
    return items


@dataclass(slots=True)
class Evaluation:
    items: int = 0
    benign: int = 0
    benign_flagged: list[tuple[Item, frozenset[str]]] = field(default_factory=list)
    labelled: Counter[str] = field(default_factory=Counter)  # items of each kind
    hits: Counter[str] = field(default_factory=Counter)  # of those, found as that kind
    flagged: Counter[str] = field(default_factory=Counter)  # items found as each kind
    missed: list[tuple[Item, frozenset[str]]] = field(default_factory=list)

    def recall(self, kind: str) -> float:
        return self.hits[kind] / self.labelled[kind] if self.labelled[kind] else float("nan")

    def precision(self, kind: str) -> float:
        return self.hits[kind] / self.flagged[kind] if self.flagged[kind] else float("nan")

    @property
    def benign_rate(self) -> float:
        return len(self.benign_flagged) / self.benign if self.benign else 0.0

    def shortfalls(self) -> list[str]:
        """Every target missed, said plainly (empty: all met)."""
        out = [
            f"{kind}: recall {self.recall(kind):.3f} < {target}"
            for kind, target in RECALL_TARGETS.items()
            if not self.recall(kind) >= target
        ]
        if self.benign_rate > MAX_BENIGN_FLAGGED:
            out.append(f"benign flagged {self.benign_rate:.3f} > {MAX_BENIGN_FLAGGED}")
        return out


def evaluate(detector: Detector | None = None) -> Evaluation:
    detector = detector or Detector()
    result = Evaluation()
    for item in corpus():
        found = frozenset(detector.kinds([item.text]))
        result.items += 1
        if not item.kinds:
            result.benign += 1
            if found:
                result.benign_flagged.append((item, found))
        result.labelled.update(item.kinds)
        result.hits.update(item.kinds & found)
        result.flagged.update(found)
        if item.kinds - found:
            result.missed.append((item, found))
    return result


def report(result: Evaluation) -> str:
    lines = [
        f"{result.items} labelled strings: {result.items - result.benign} sensitive, "
        f"{result.benign} benign look-alikes.",
        "",
        "| kind | strings | recall | target | precision |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in sorted(result.labelled):
        target = RECALL_TARGETS.get(kind)
        lines.append(
            f"| {kind} | {result.labelled[kind]} | {result.recall(kind):.3f} | "
            f"{'>= ' + format(target, '.2f') if target else '-'} | {result.precision(kind):.3f} |"
        )
    lines += [
        "",
        f"Benign strings flagged: {len(result.benign_flagged)} of {result.benign} "
        f"({100 * result.benign_rate:.1f} %; target <= {100 * MAX_BENIGN_FLAGGED:.0f} %).",
    ]
    for item, found in result.benign_flagged:
        lines.append(f"- `{item.id}` flagged as {', '.join(sorted(found))}: {item.text[:80]!r}")
    if result.missed:
        lines += ["", "Missed:"]
        for item, found in result.missed:
            lines.append(
                f"- `{item.id}` (found {', '.join(sorted(found)) or 'nothing'}): {item.text[:80]!r}"
            )
    shortfalls = result.shortfalls()
    lines += ["", "Targets: " + ("all met." if not shortfalls else "; ".join(shortfalls))]
    return "\n".join(lines)
