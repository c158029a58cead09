"""Where a request goes: aliases to catalog ids, ``auto`` to the tier its class deserves,
``tier:<name>`` to the tier's chain (stepped down while the day's budget is low), a prompt with
sensitive content to the local tier or, with consent, to cloud models that retain nothing.

The answer is one immutable :class:`Decision` made here and carried, never rebuilt, to the
quote, the task's record and the runner."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..routing.classifier import TaskClass, classify
from ..routing.privacy import Detector, review
from .context import Context
from .refusals import Refusal
from .requests import ChatRequest

#: Model names that ask satrouter to classify the prompt and pick the tier.
AUTO = frozenset({"auto", "tier:auto"})
#: The model name that asks for a cheap draft, checked, and escalated when the check fails.
CASCADE = "cascade"


@dataclass(frozen=True, slots=True)
class Decision:
    """How a request was routed."""

    tier: str | None = None
    privacy: dict[str, Any] | None = None  # kinds found and where the prompt may go
    task_class: TaskClass | None = None  # for "auto" and "cascade"
    #: local models to try when every cloud model failed (the policy's ``last_resort``)
    last_resort: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        """The prompt must stay on the local endpoint."""
        return self.privacy is not None and self.privacy.get("decision") == "local"

    def record(self) -> dict[str, Any]:
        """What the task keeps of how it was routed."""
        data: dict[str, Any] = {"tier": self.tier, "privacy": self.privacy}
        if self.last_resort:
            data["last_resort"] = list(self.last_resort)
        if self.task_class is not None:
            data["task_class"] = self.task_class.name
            data["classification"] = self.task_class.as_dict()
        return data


class Router:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def route(self, request: ChatRequest) -> tuple[ChatRequest, Decision]:
        """The request to price (its models resolved) and how it was routed."""
        ctx = self._ctx
        policy = ctx.routing.policy
        model = request.model or ""
        tier: str | None = None
        task_class: TaskClass | None = None
        if model in AUTO:
            task_class = classify([m.text for m in request.messages], request.completion_limit)
            # A tier the catalog emptied is passed over along its fallbacks, then the default.
            deserved = policy.tier_for(task_class)
            model = "tier:" + (
                policy.usable(deserved) or policy.usable(policy.default_tier) or deserved
            )
        if not model.startswith("tier:"):
            models = [policy.resolve(m) for m in request.models or []]
            update = {"model": policy.resolve(model) if model else None, "models": models or None}
            request = request.model_copy(update=update)
        else:
            wanted = model.removeprefix("tier:")
            if wanted == "default":
                wanted = policy.default_tier
            if wanted in policy.disabled:
                raise Refusal(
                    "tier_unavailable",
                    f"tier {wanted!r} is disabled: none of its models is in OpenRouter's catalog "
                    f"now; tiers: {', '.join(policy.tiers)}",
                    extra={"tier": wanted},
                )
            if wanted not in policy.tiers:
                raise Refusal(
                    "unknown_tier", f"no tier {wanted!r}; tiers: {', '.join(policy.tiers)}"
                )
            tier = policy.step_down(wanted, await self.budget_remaining())
            if tier is None:
                budgets = ctx.config.budgets
                day, _ = budgets.periods(time.time())
                raise Refusal(
                    "budget_exhausted",
                    "the day's budget is spent down to every tier's floor",
                    retry_after=budgets.seconds_left(day, time.time()),
                    should_retry=False,
                )
            chain = policy.chain(tier)
            request = request.model_copy(update={"model": chain[0], "models": chain})
        local = policy.tiers.get(policy.private_tier or "", ())
        decision = await review(
            request,
            Detector(policy.private_patterns),
            mode=ctx.privacy_mode,
            consent=request.allow_sensitive_cloud,
            local=ctx.local_runner is not None and bool(local),
        )
        if decision.action == "refuse":
            raise Refusal(
                "sensitive_content", decision.reason, extra={"kinds": list(decision.kinds)}
            )
        if decision.action == "cloud_zdr":
            request = request.model_copy(update={"provider": dict(decision.provider or {})})
        elif decision.action == "local":
            chain = list(local)
            update = {"model": chain[0], "models": chain, "provider": None}
            routed = Decision(policy.private_tier, decision.record(), task_class)
            return request.model_copy(update=update), routed
        return request, Decision(tier, decision.record(), task_class, self._last_resort(tier))

    def _last_resort(self, tier: str | None) -> tuple[str, ...]:
        """The local models a tier-routed request may end on when every cloud model fails
        (only where the policy names a ``last_resort`` tier and a local endpoint is set). A
        request that names its own models gets those or its money back."""
        policy = self._ctx.routing.policy
        if not policy.last_resort or tier is None or self._ctx.local_runner is None:
            return ()
        return policy.tiers[policy.last_resort]

    async def budget_remaining(self) -> Decimal | None:
        """The fraction of the global daily dollar budget left (None without one)."""
        budgets = self._ctx.config.budgets
        cap = budgets.global_daily.usd
        if cap is None or not cap.value:
            return None
        day, _ = budgets.periods(time.time())
        async with self._ctx.store.read() as tx:
            _, spent = await tx.budget_usage("global", day)
        return max(Decimal(0), 1 - Decimal(spent) / Decimal(cap.value))
