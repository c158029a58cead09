"""How well ``auto`` routing does on the shipped labelled prompt set.

``labelled_prompts.jsonl`` holds prompts written for satrouter, each with the tier a careful
operator would pay for (economy, standard, code, reasoning or premium). Each prompt is
classified, routed through the policy's ``[classes]`` table, and priced on the routed tier's
first model and on the premium tier's first model, with the catalog's real prices.

The answer's length is not known before it is written, so each labelled tier has a typical
answer length (:data:`ANSWER_TOKENS`) used for both prices; prompt tokens are estimated at four
bytes per token. Tiers are ranked by capability (:data:`RANK`) to count prompts routed below the
tier they deserve.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources

from billing.pricing import ModelPrice

from .classifier import classify
from .policy import Policy

RANK = {"local": 0, "economy": 0, "standard": 1, "code": 1, "reasoning": 2, "premium": 3}
ANSWER_TOKENS = {"economy": 120, "standard": 400, "code": 450, "reasoning": 700, "premium": 900}
LABELS = ("economy", "standard", "code", "reasoning", "premium")


@dataclass(frozen=True, slots=True)
class Prompt:
    id: str
    tier: str
    prompt: str
    #: "tuning": written while the classifier's rules were; "holdout": written after them
    split: str = "tuning"


def prompts() -> list[Prompt]:
    """The shipped labelled prompt set."""
    text = resources.files("service.routing").joinpath("labelled_prompts.jsonl").read_text()
    return [Prompt(**json.loads(line)) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class Routed:
    prompt: Prompt
    task_class: str
    tier: str
    # what answering it costs, in nano-dollars, on...
    routed_nusd: int  # the routed tier's first model
    premium_nusd: int  # the premium tier's first model
    labelled_nusd: int  # the labelled tier's first model

    @property
    def below(self) -> bool:
        return RANK.get(self.tier, 0) < RANK[self.prompt.tier]

    @property
    def above(self) -> bool:
        return RANK.get(self.tier, 0) > RANK[self.prompt.tier]


@dataclass(slots=True)
class Evaluation:
    routed: list[Routed]
    classify_us: float  # mean time to classify one prompt, microseconds

    @property
    def cost_routed_usd(self) -> float:
        return sum(r.routed_nusd for r in self.routed) / 1e9

    @property
    def cost_premium_usd(self) -> float:
        return sum(r.premium_nusd for r in self.routed) / 1e9

    @property
    def cost_labelled_usd(self) -> float:
        """Every prompt on the tier it deserves: the best routing can do."""
        return sum(r.labelled_nusd for r in self.routed) / 1e9

    @property
    def confusion(self) -> Counter[tuple[str, str]]:
        return Counter((r.prompt.tier, r.tier) for r in self.routed)

    def by_label(self, label: str) -> tuple[int, int]:
        """A labelled tier's (always-premium, routed) cost in nano-dollars."""
        chosen = [r for r in self.routed if r.prompt.tier == label]
        return sum(r.premium_nusd for r in chosen), sum(r.routed_nusd for r in chosen)

    def accuracy(self, split: str | None = None) -> float:
        chosen = [r for r in self.routed if split is None or r.prompt.split == split]
        return sum(r.tier == r.prompt.tier for r in chosen) / len(chosen) if chosen else 0.0

    @property
    def saving(self) -> float:
        """How much cheaper routed is than always-premium (0.7 = 70 % cheaper)."""
        return 1 - self.cost_routed_usd / self.cost_premium_usd

    def under_routed(self, label: str | None = None, split: str | None = None) -> float:
        """The share of prompts (of one label, or all) routed below the tier they deserve."""
        chosen = [
            r
            for r in self.routed
            if (label is None or r.prompt.tier == label)
            and (split is None or r.prompt.split == split)
        ]
        return sum(r.below for r in chosen) / len(chosen) if chosen else 0.0


def _prompt_tokens(text: str) -> int:
    return math.ceil(len(text.encode()) / 4) + 7  # message and request overhead


def evaluate(
    policy: Policy,
    price_of: Callable[[str], ModelPrice],
    items: Iterable[Prompt] | None = None,
) -> Evaluation:
    """Classify and route every prompt; price routed, always-premium and labelled."""
    items = list(items if items is not None else prompts())
    missing = sorted({p.tier for p in items} - set(policy.tiers))
    if missing:
        raise ValueError(f"the labelled prompts name tiers the policy lacks: {', '.join(missing)}")
    premium = price_of(policy.tiers["premium"][0])
    started = time.perf_counter()
    classes = [classify([p.prompt]) for p in items]
    classify_us = (time.perf_counter() - started) / len(items) * 1e6
    routed: list[Routed] = []
    for item, task_class in zip(items, classes, strict=True):
        tier = policy.tier_for(task_class)
        prompt_tokens = _prompt_tokens(item.prompt)
        answer = ANSWER_TOKENS[item.tier]
        on = (price_of(policy.tiers[tier][0]), premium, price_of(policy.tiers[item.tier][0]))
        costs = [price.cost(prompt_tokens, answer).value for price in on]
        routed.append(Routed(item, task_class.name, tier, *costs))
    return Evaluation(routed, classify_us)


def report(evaluation: Evaluation) -> str:
    """The Markdown section for docs/routing.md."""
    e = evaluation
    routed_tiers = sorted({t for _, t in e.confusion}, key=lambda t: (RANK.get(t, 0), t))
    holdout = sum(r.prompt.split == "holdout" for r in e.routed)
    lines = [
        f"{len(e.routed)} labelled prompts "
        + ", ".join(f"{sum(r.prompt.tier == t for r in e.routed)} {t}" for t in LABELS)
        + ".",
        "",
        "| measure | value |",
        "|---|---|",
        f"| classifier accuracy (routed tier = labelled tier) | {e.accuracy():.1%} |",
        f"| premium-deserving prompts routed below premium | {e.under_routed('premium'):.1%} |",
        f"| all prompts routed below their tier | {e.under_routed():.1%} |",
        f"| accuracy on the {holdout} held-out prompts | {e.accuracy('holdout'):.1%} |",
        f"| held-out premium prompts routed below premium | "
        f"{e.under_routed('premium', 'holdout'):.1%} |",
        f"| held-out prompts routed below their tier | {e.under_routed(split='holdout'):.1%} |",
        f"| cost, always premium | ${e.cost_premium_usd:.4f} |",
        f"| cost, routed | ${e.cost_routed_usd:.4f} |",
        f"| cost, every prompt on its labelled tier | ${e.cost_labelled_usd:.4f} |",
        f"| routed saving against always premium | {e.saving:.1%} |",
        f"| time to classify a prompt (mean) | {e.classify_us:.0f} µs |",
        "",
        "Labelled tier (rows) against routed tier (columns):",
        "",
        "| labelled | " + " | ".join(routed_tiers) + " | below | above |",
        "|---|" + "---|" * (len(routed_tiers) + 2),
    ]
    for label in LABELS:
        of_label = [r for r in e.routed if r.prompt.tier == label]
        cells = [str(e.confusion[(label, t)]) for t in routed_tiers]
        below = sum(r.below for r in of_label)
        above = sum(r.above for r in of_label)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {below} | {above} |")
    lines += [
        "",
        "Cost by labelled tier (reweight these for your own traffic):",
        "",
        "| labelled | prompts | always premium | routed | saving |",
        "|---|---|---|---|---|",
    ]
    for label in LABELS:
        premium, routed = e.by_label(label)
        count = sum(r.prompt.tier == label for r in e.routed)
        saving = f"{1 - routed / premium:.1%}" if premium else "-"
        lines.append(
            f"| {label} | {count} | ${premium / 1e9:.4f} | ${routed / 1e9:.4f} | {saving} |"
        )
    misses = [r for r in e.routed if r.below]
    if misses:
        lines += ["", "Routed below their tier:", ""]
        lines += [
            f"- `{r.prompt.id}` ({r.task_class} -> {r.tier}): {r.prompt.prompt[:90]!r}"
            for r in misses
        ]
    elsewhere = [r for r in e.routed if r.prompt.split == "holdout" and r.tier != r.prompt.tier]
    if elsewhere:
        lines += ["", "Held-out prompts routed to another tier:", ""]
        lines += [
            f"- `{r.prompt.id}` ({r.task_class} -> {r.tier}): {r.prompt.prompt[:90]!r}"
            for r in elsewhere
        ]
    return "\n".join(lines)
