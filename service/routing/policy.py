"""The routing policy: tiers of models, where each tier falls back to, model aliases, and how
tiers step down as the day's budget drains. A TOML file (``SATROUTER_POLICY``; an example with
comments is ``deploy/policy.example.toml``).

Mistakes in the file stop the load with the line they are on: TOML syntax, an empty tier, a
name that is not a tier, a fallback cycle. The model catalog is checked too, but OpenRouter
retires and renames models often, so a model the catalog lacks does not stop the load: it is
dropped from its tier with a warning, a tier left with no model is *disabled* (a request for it
gets 503 ``tier_unavailable``; ``auto``, step-down and fallbacks pass over it), and an alias or
the cascade judge that names it is left out. :attr:`Policy.dropped`, :attr:`Policy.disabled`
and :attr:`Policy.notes` say what was lost (``/readyz``, ``/admin/status``). A loaded policy is
immutable; reloading (SIGHUP or ``POST /admin/policy/reload``) builds a new one against the
current catalog and swaps it in only if it is valid.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from ..upstream.catalog import CatalogUnavailable
from .classifier import COMPLEXITIES, KINDS, TaskClass

log = logging.getLogger(__name__)


class PolicyError(ValueError):
    """The policy file is wrong; the message names the line."""


@dataclass(frozen=True, slots=True)
class Alias:
    pattern: re.Pattern[str]
    replacement: str


@dataclass(frozen=True, slots=True)
class Cascade:
    """``model: "cascade"``: draft on the first tier, escalate along ``steps`` when the draft
    fails its check (see :mod:`service.routing.cascade`)."""

    steps: tuple[str, ...]
    min_confidence: float = 0.5
    judge: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    tiers: Mapping[str, tuple[str, ...]]
    fallback: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)  # exact aliases
    patterns: tuple[Alias, ...] = ()
    default_tier: str = "standard"
    #: a tier may be used while more than this fraction of the day's budget remains
    budget_floor: Mapping[str, Decimal] = field(default_factory=dict)
    source: str = "built-in"
    #: where sensitive prompts go, and the operator's own sensitive patterns
    private_tier: str | None = None
    private_patterns: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    #: task class (``kind.complexity`` or ``kind``) to tier, for ``model: "auto"``
    classes: Mapping[str, str] = field(default_factory=dict)
    cascade: Cascade | None = None
    #: a tier of local models a tier-routed request ends on when every cloud model failed
    last_resort: str | None = None
    #: models the catalog lacked at load, by the tier they were dropped from
    dropped: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: tiers left with no model (not in ``tiers``): requests for them are refused with 503
    disabled: tuple[str, ...] = ()
    #: what else the missing models switched off (aliases, the cascade judge, the cascade)
    notes: tuple[str, ...] = ()
    #: the models the local endpoint serves: the ``[privacy]`` tier's, in no OpenRouter catalog
    local_models: frozenset[str] = frozenset()

    def usable(self, tier: str) -> str | None:
        """``tier`` if it has models, else the first tier along its fallback path that has."""
        seen: set[str] = set()
        while tier and tier not in seen:
            seen.add(tier)
            if tier in self.tiers:
                return tier
            tier = self.fallback.get(tier, "")
        return None

    @property
    def serving(self) -> tuple[str, ...]:
        """Tiers with at least one catalog (cloud) model: what ordinary requests can use.
        Tiers of local models only serve prompts that must stay local."""
        return tuple(t for t, models in self.tiers.items() if set(models) - self.local_models)

    def degradation(self) -> dict[str, Any]:
        """What the catalog took away, for ``/readyz`` and ``/admin/status``."""
        return {
            "source": self.source,
            "tiers": list(self.tiers),
            "serving": list(self.serving),
            "disabled_tiers": list(self.disabled),
            "dropped_models": {tier: list(models) for tier, models in self.dropped.items()},
            "notes": list(self.notes),
        }

    def tier_for(self, task_class: TaskClass) -> str:
        """The tier a class of task deserves: its exact class's rule, else its kind's, else
        the default tier."""
        return self.classes.get(
            task_class.name, self.classes.get(task_class.kind, self.default_tier)
        )

    def resolve(self, model: str) -> str:
        """An agent's model name to a catalog id (exact aliases first, then patterns)."""
        if model in self.names:
            return self.names[model]
        for alias in self.patterns:
            if alias.pattern.fullmatch(model):
                return alias.pattern.sub(alias.replacement, model)
        return model

    def chain(self, tier: str) -> list[str]:
        """The tier's models, then its fallback tiers' models, in order, without repeats."""
        out: list[str] = []
        seen: set[str] = set()
        while tier and tier not in seen:
            seen.add(tier)
            out.extend(m for m in self.tiers.get(tier, ()) if m not in out)
            tier = self.fallback.get(tier, "")
        return out

    def step_down(self, tier: str, remaining: Decimal | None) -> str | None:
        """The first tier along the fallback path that has models and that the remaining
        budget allows."""
        seen: set[str] = set()
        while tier and tier not in seen:
            seen.add(tier)
            allowed = remaining is None or remaining > self.budget_floor.get(tier, Decimal(0))
            if tier in self.tiers and allowed:
                return tier
            tier = self.fallback.get(tier, "")
        return None


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return 0


def parse(text: str, known_model: Callable[[str], bool], source: str = "policy") -> Policy:
    """Parse and validate a policy file's text. Raises :class:`PolicyError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: {exc}") from None

    def fail(message: str, needle: str) -> PolicyError:
        line = _line_of(text, needle)
        return PolicyError(f"{source}:{line}: {message}" if line else f"{source}: {message}")

    tiers_raw = data.get("tiers")
    if not isinstance(tiers_raw, dict) or not tiers_raw:
        raise fail("a [tiers] table with at least one tier is required", "[tiers]")
    # The [privacy] tier is the one the local endpoint serves: its models are the local ones
    # (checked against no catalog; the only ones a last-resort tier may hold).
    privacy_raw = data.get("privacy", {})
    local_tier = privacy_raw.get("tier") if isinstance(privacy_raw, dict) else None
    local_raw = tiers_raw.get(local_tier) if isinstance(local_tier, str) else None
    local = (
        frozenset(m for m in local_raw if isinstance(m, str))
        if isinstance(local_raw, list)
        else frozenset()
    )
    declared: dict[str, tuple[str, ...]] = {}
    dropped: dict[str, tuple[str, ...]] = {}
    for name, models in tiers_raw.items():
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise fail(f"tier {name!r} must be a list of model ids", f"{name}")
        if not models:
            raise fail(f"tier {name!r} is empty", f"{name}")
        declared[name] = tuple(models)
        if missing := tuple(m for m in models if not (known_model(m) or m in local)):
            dropped[name] = missing
    # A catalog that moved on is not a mistake in the file: drop, warn once per model, go on.
    for model in dict.fromkeys(m for missing in dropped.values() for m in missing):
        where = [t for t, missing in dropped.items() if model in missing]
        log.warning(
            "%s:%d: model %r is not in the catalog; dropped from tier %s",
            source,
            _line_of(text, f'"{model}"'),
            model,
            ", ".join(repr(t) for t in where),
        )
    tiers = {
        name: kept
        for name, models in declared.items()
        if (kept := tuple(m for m in models if m not in dropped.get(name, ())))
    }
    disabled = tuple(name for name in declared if name not in tiers)
    for name in disabled:
        log.warning("%s: tier %r has no model left in the catalog; it is disabled", source, name)
    notes: list[str] = []
    fallback = _strings(data.get("fallback", {}), "fallback", fail)
    for tier, target in fallback.items():
        for name in (tier, target):
            if name not in declared:
                raise fail(f"fallback names tier {name!r}, which is not in [tiers]", name)
    for start in fallback:
        seen, tier = [start], fallback[start]
        while tier in fallback:
            if tier in seen:
                raise fail(f"fallback cycle: {' -> '.join([*seen, tier])}", f"{start}")
            seen.append(tier)
            tier = fallback[tier]
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict):
        raise fail("[aliases] must be a table", "[aliases]")
    names = {k: v for k, v in aliases.items() if k != "patterns"}
    for alias, target in list(names.items()):
        if not isinstance(target, str):
            raise fail(f"alias {alias!r} must name a model id", f"{alias}")
        if not known_model(target):
            log.warning(
                "%s: alias %r: model %r is not in the catalog; dropped", source, alias, target
            )
            notes.append(f"alias {alias!r} dropped: {target!r} is not in the catalog")
            del names[alias]
    patterns: list[Alias] = []
    for entry in aliases.get("patterns", []):
        try:
            patterns.append(Alias(re.compile(entry["match"]), entry["replace"]))
        except (KeyError, TypeError, re.error) as exc:
            raise fail(f"alias pattern: {exc}", "match") from None
    routing = data.get("routing", {})
    default_tier = routing.get("default_tier", next(iter(declared)))
    if default_tier not in declared:
        raise fail(f"default_tier {default_tier!r} is not in [tiers]", "default_tier")
    last_resort = routing.get("last_resort")
    if last_resort is not None:
        if last_resort not in declared:
            raise fail(f"last_resort {last_resort!r} is not in [tiers]", "last_resort")
        if cloud := [m for m in declared[last_resort] if m not in local]:
            raise fail(
                f"last_resort {last_resort!r} runs at the local endpoint; {cloud[0]!r} is a "
                "cloud model (the local ones are the [privacy] tier's)",
                "last_resort",
            )
    floors: dict[str, Decimal] = {}
    for tier, value in data.get("budget", {}).items():
        if tier not in declared:
            raise fail(f"[budget] names tier {tier!r}, which is not in [tiers]", tier)
        try:
            floors[tier] = Decimal(str(value))
        except ArithmeticError:
            raise fail(f"[budget] {tier}: not a number", tier) from None
        if not Decimal(0) <= floors[tier] <= Decimal(1):
            raise fail(f"[budget] {tier}: a fraction from 0 to 1", tier)
    privacy = data.get("privacy", {})
    private_tier = privacy.get("tier")
    if private_tier is not None and private_tier not in declared:
        raise fail(f"[privacy] tier {private_tier!r} is not in [tiers]", "tier =")
    extra: dict[str, re.Pattern[str]] = {}
    for name, regex in privacy.get("patterns", {}).items():
        try:
            extra[name] = re.compile(regex)
        except (re.error, TypeError) as exc:
            raise fail(f"[privacy.patterns] {name}: {exc}", name) from None
    classes = _strings(data.get("classes", {}), "classes", fail)
    for name, tier in classes.items():
        kind, _, complexity = name.partition(".")
        if kind not in KINDS or (complexity and complexity not in COMPLEXITIES):
            raise fail(
                f"[classes] {name!r}: a class is a kind ({', '.join(KINDS)}), optionally "
                f"with .{'/.'.join(COMPLEXITIES)}",
                name,
            )
        if tier not in declared:
            raise fail(f"[classes] {name!r} names tier {tier!r}, which is not in [tiers]", name)
    return Policy(
        tiers,
        fallback,
        names,
        tuple(patterns),
        default_tier,
        floors,
        source,
        private_tier,
        extra,
        classes,
        _cascade(data.get("cascade"), declared, tiers, known_model, fail, notes, source),
        last_resort,
        dropped,
        disabled,
        tuple(notes),
        local,
    )


def _cascade(
    value: Any,
    declared: Mapping[str, tuple[str, ...]],
    tiers: Mapping[str, tuple[str, ...]],
    known_model: Callable[[str], bool],
    fail: Callable[[str, str], PolicyError],
    notes: list[str],
    source: str,
) -> Cascade | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("[cascade] must be a table", "[cascade]")
    steps = value.get("steps")
    if not isinstance(steps, list) or len(steps) < 2 or not all(s in declared for s in steps):
        raise fail("[cascade] steps: two or more tiers from [tiers], cheapest first", "steps")
    confidence = value.get("min_confidence", 0.5)
    if not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        raise fail("[cascade] min_confidence: a probability from 0 to 1", "min_confidence")
    judge = value.get("judge") or None
    if judge is not None and not isinstance(judge, str):
        raise fail(f"[cascade] judge: not a model id: {judge!r}", "judge")
    if judge is not None and not known_model(judge):
        log.warning("%s: [cascade] judge %r is not in the catalog; judging is off", source, judge)
        notes.append(f"cascade judge {judge!r} dropped: not in the catalog")
        judge = None
    working = [s for s in steps if s in tiers]
    if len(working) < 2:
        log.warning("%s: [cascade] has fewer than two tiers with models; it is off", source)
        notes.append(f"cascade off: fewer than two of {', '.join(steps)} have models")
        return None
    return Cascade(tuple(working), float(confidence), judge)


def _strings(value: Any, table: str, fail: Callable[[str, str], PolicyError]) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise fail(f"[{table}] must map names to names", f"[{table}]")
    return dict(value)


def load(path: Path, known_model: Callable[[str], bool]) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read the policy {path}: {exc}") from None
    return parse(text, known_model, str(path))


def builtin(known_model: Callable[[str], bool]) -> Policy:
    """The policy when no file is given (``deploy/policy.example.toml`` is a copy of it)."""
    text = resources.files("service.routing").joinpath("default_policy.toml").read_text()
    return parse(text, known_model, "default_policy.toml")


class PolicyHolder:
    """The current policy; :meth:`reload` swaps a new valid one in atomically."""

    def __init__(
        self,
        policy: Policy,
        path: Path | None,
        known_model: Callable[[str], bool],
        refresh_catalog: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.policy = policy
        self._path = path
        self._known = known_model
        self._refresh = refresh_catalog

    async def refresh_and_reload(self) -> Policy:
        """Refresh the catalog first (the last good one stays if that fails), then
        :meth:`reload` against it: what SIGHUP and ``POST /admin/policy/reload`` do."""
        if self._refresh is not None:
            with contextlib.suppress(CatalogUnavailable):
                await self._refresh()
        return self.reload()

    def reload(self) -> Policy:
        """Re-read the policy file (the built-in policy when there is none) and check it
        against the catalog as it is now. Raises :class:`PolicyError` before swapping."""
        if self._path is None:
            self.policy = builtin(self._known)
        else:
            self.policy = load(self._path, self._known)
        return self.policy
