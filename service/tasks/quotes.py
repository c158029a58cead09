"""Pricing a request: the most it can cost across its whole fallback chain (or the sum of a
consensus's or a cascade's calls), and the exact body to send upstream; and a quote's stored
form, written and read here alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.money import Msat, NanoUsd
from billing.pricing import (
    ModelPrice,
    Quote,
    QuoteError,
    bound_price,
    canonical_json,
    combine,
    input_tokens_upper_bound,
    quote,
)
from billing.rates import Rate, RateUnavailable

from ..routing import cascade
from ..upstream.catalog import Catalog, CatalogUnavailable, ModelInfo
from ..upstream.max_price import with_max_price
from .context import Context
from .refusals import Refusal
from .requests import ChatMessage, ChatRequest
from .routes import CASCADE, Decision, Router

#: Local models cost nothing upstream; the quote is the fee (and markup on nothing).
LOCAL_INFO = ModelInfo("local", "local model", None, None, ModelPrice(Decimal(0), Decimal(0)), {})
#: Content parts the quote can bound: text by its bytes, images at the per-image price.
_TEXT_PARTS = frozenset({"text"})
_IMAGE_PARTS = frozenset({"image_url"})


@dataclass(frozen=True, slots=True)
class Priced:
    """A request with its quote, the exact body to send upstream, and how it was routed."""

    quote: Quote
    body: dict[str, Any]
    decision: Decision = field(default_factory=Decision)

    @property
    def tier(self) -> str | None:
        return self.decision.tier

    @property
    def privacy(self) -> dict[str, Any] | None:
        return self.decision.privacy

    @property
    def task_class(self) -> Any:
        return self.decision.task_class


@dataclass(frozen=True, slots=True)
class StoredQuote:
    """A quote as a task keeps it and agents see it (``PriceBreakdown``)."""

    model: str
    prompt_tokens_max: int
    completion_tokens_max: int
    cost_max_nusd: int
    btc_usd: str
    rate_source: str
    rate_at: float
    cost_msat: int
    markup_msat: int
    fee_msat: int
    total_msat: int
    completion_bound: str = "requested"
    images: int = 0

    @classmethod
    def of(cls, q: Quote) -> StoredQuote:
        return cls(
            q.model,
            q.prompt_tokens_max,
            q.completion_tokens_max,
            q.cost_max.value,
            str(q.rate.usd_per_btc),
            q.rate.source,
            q.rate.at,
            q.cost_msat.value,
            q.markup.value,
            q.fee.value,
            q.total.value,
            q.completion_bound,
            q.images,
        )

    @classmethod
    def load(cls, data: dict[str, Any]) -> StoredQuote:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def dump(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @property
    def total(self) -> Msat:
        return Msat(int(self.total_msat))

    @property
    def cost_max(self) -> NanoUsd:
        return NanoUsd(int(self.cost_max_nusd))

    @property
    def rate(self) -> Rate:
        return Rate(Decimal(self.btc_usd), self.rate_source, self.rate_at)


def quote_data(q: Quote) -> dict[str, Any]:
    """A quote as stored with a task and shown to agents."""
    return StoredQuote.of(q).dump()


def within_max_price(request: ChatRequest, q: Quote) -> None:
    """Refuse, before anything runs, a request that may cost more than its caller allows."""
    if request.max_price_msat is not None and q.total.value > request.max_price_msat:
        raise Refusal(
            "over_max_price",
            f"this request may cost up to {q.total.value} msat, above its "
            f"max_price_msat of {request.max_price_msat}",
            extra={"price_msat": q.total.value},
            should_retry=False,
        )


def count_images(request: ChatRequest) -> int:
    """The request's input images; refused for parts no quote can bound (files, audio...)."""
    images = 0
    for message in request.messages:
        for part in message.parts:
            kind = part.get("type")
            if not isinstance(kind, str):
                raise Refusal("invalid_content", "a content part's type must be a string")
            if kind in _IMAGE_PARTS:
                images += 1
            elif kind not in _TEXT_PARTS:
                raise Refusal(
                    "unpriceable_input",
                    f"content parts of type {str(kind)[:40]!r} cannot be priced before the "
                    "call; send text and images",
                )
    return images


class Quoter:
    def __init__(self, ctx: Context, router: Router) -> None:
        self._ctx = ctx
        self._router = router

    async def market(self) -> tuple[Catalog, Rate]:
        """The model catalog and the BTC/USD rate; refused while either is unknown."""
        try:
            catalog = await self._ctx.catalog.get()
        except CatalogUnavailable as exc:
            raise Refusal("catalog_unavailable", str(exc)) from None
        try:
            return catalog, await self._ctx.rates.current()
        except RateUnavailable as exc:
            raise Refusal("rate_unavailable", str(exc)) from None

    async def price(self, request: ChatRequest) -> Priced:
        """Quote the most this request can cost, across its whole fallback chain: every input
        the upstream bills (messages, tool and output schemas, images), the completion bound,
        at prices no model or provider of the chain exceeds (sent as ``provider.max_price``)."""
        if request.consensus is not None:
            return await self._consensus(request)
        if request.model == CASCADE:
            return await self._cascade(request)
        catalog, rate = await self.market()
        request, decision = await self._router.route(request)
        local = decision.local
        messages, schemas = request.billed_input()
        prompt_max = input_tokens_upper_bound(messages, schemas)
        images = count_images(request)
        infos: list[ModelInfo] = []
        for model_id in request.chain:
            info = LOCAL_INFO if local else catalog.get(model_id)
            if info is None:
                raise Refusal("unknown_model", f"{model_id} is not a model satrouter offers")
            if info.price is None:
                raise Refusal(
                    "unpriceable_model",
                    f"{model_id} has a variable or unknown price and cannot be quoted",
                )
            if info.context_length and prompt_max > info.context_length * 4:
                raise Refusal("prompt_too_long", f"the prompt is too long for {model_id}")
            if images and not local and not info.price.image:
                raise Refusal(
                    "unpriceable_input",
                    f"{model_id} publishes no per-image price: its images cannot be quoted",
                )
            infos.append(info)
        limit, bound = max(self._completion_bound(info, request, local) for info in infos)
        reasoning = request.reasoning
        if reasoning is not None and reasoning.max_tokens and reasoning.max_tokens >= limit:
            raise Refusal(
                "reasoning_over_completion_bound",
                f"reasoning.max_tokens ({reasoning.max_tokens}) must be below the completion "
                f"bound ({limit}): reasoning tokens are billed as completion tokens",
            )
        cache_writes = any("cache_control" in canonical_json(part) for part in messages)
        price = bound_price(
            [i.price for i in infos if i.price], prompt_max, cache_writes=cache_writes
        )
        try:
            q = quote(
                request.chain[0],
                price,
                prompt_tokens_max=prompt_max,
                completion_tokens_max=limit,
                rate=rate,
                policy=self._ctx.policy,
                images=0 if local else images,
                completion_bound=bound,
            )
        except QuoteError as exc:
            raise Refusal("unpriceable_model", str(exc)) from None
        within_max_price(request, q)
        body = request.upstream_body()
        chain = request.chain
        body["model"] = chain[0]
        if len(chain) > 1:
            body["models"] = chain
        # Never let the call produce more than was paid for.
        body["max_tokens"] = q.completion_tokens_max
        if not local:
            body["provider"] = with_max_price(request.provider, price, images=bool(images))
        return Priced(q, body, decision)

    def _completion_bound(
        self, info: ModelInfo, request: ChatRequest, local: bool
    ) -> tuple[int, str]:
        """The most completion tokens ``info``'s model may bill for this request, and why:
        the caller's ``max_tokens`` within the model's limit, else the model's own limit,
        else its whole context (the prompt bound over-counts, so context minus the bound
        would not be an upper bound)."""
        requested = request.completion_limit
        if local:  # local models are free: any bound prices the same
            return requested or self._ctx.config.default_max_tokens, "local"
        cap = info.max_completion_tokens
        if requested and (cap is None or requested <= cap):
            return requested, "requested"
        if cap:
            return cap, "model_max"
        if info.context_length:
            return info.context_length, "context_length"
        raise Refusal(
            "unpriceable_model",
            f"{info.id}: set max_tokens; the model publishes no completion limit",
        )

    async def _consensus(self, request: ChatRequest) -> Priced:
        """Each model priced on its own; the quote is their sum."""
        spec = request.consensus
        assert spec is not None
        policy = self._ctx.routing.policy
        if spec.models:
            models = [policy.resolve(m) for m in spec.models]
        elif spec.tier and spec.tier in policy.tiers:
            models = list(policy.tiers[spec.tier][: spec.n])
        else:
            raise Refusal("invalid_consensus", "name two to five models, or a known tier")
        if len(set(models)) < 2:
            raise Refusal("invalid_consensus", "consensus needs two different models")
        single = request.model_copy(update={"consensus": None, "models": None})
        calls = [await self.price(single.model_copy(update={"model": m})) for m in models]
        if any(c.decision.local for c in calls):
            raise Refusal(
                "sensitive_content",
                "consensus asks cloud models; this prompt must stay local",
                extra={"kinds": calls[0].privacy["kinds"] if calls[0].privacy else []},
            )
        total = combine([c.quote for c in calls], "consensus(" + ",".join(models) + ")")
        within_max_price(request, total)
        body = {
            **calls[0].body,
            "consensus": {"calls": [c.body for c in calls], "threshold": spec.threshold},
        }
        return Priced(total, body, Decision(spec.tier, calls[0].privacy))

    async def _cascade(self, request: ChatRequest) -> Priced:
        """Every step of the cascade, and a judge call after each draft, priced on its own;
        the quote is their sum (what does not run comes back as change)."""
        rules = self._ctx.routing.policy.cascade
        if rules is None:
            raise Refusal("cascade_unavailable", "this satrouter's policy has no [cascade]")
        steps = [
            await self.price(request.model_copy(update={"model": f"tier:{tier}", "models": None}))
            for tier in rules.steps
        ]
        if steps[0].decision.local:
            return steps[0]  # a prompt that must stay local runs on the local tier alone
        # The judge reads each draft cut to this many bytes: a bound on its prompt.
        draft_bytes = [4 * step.quote.completion_tokens_max for step in steps]
        judges: list[Priced | None] = [None] * len(steps)  # none after the last step
        if rules.judge:
            ask = cascade.last_user_text(steps[0].body["messages"])
            for n in range(len(steps) - 1):
                placeholder = cascade.judge_messages(ask, "x" * draft_bytes[n])
                judge = request.model_copy(
                    update={
                        "model": rules.judge,
                        "models": None,
                        "messages": [ChatMessage.model_validate(m) for m in placeholder],
                        "max_tokens": cascade.JUDGE_MAX_TOKENS,
                        "max_completion_tokens": None,
                        "max_price_msat": None,
                        "response_format": None,
                        # the judge reads text and answers in text: no tools of the task's
                        "tools": None,
                        "tool_choice": None,
                        "functions": None,
                        "function_call": None,
                        "parallel_tool_calls": None,
                        "reasoning": None,
                    }
                )
                judges[n] = await self.price(judge)
        tiers = [step.tier or "" for step in steps]
        parts = [p.quote for p in (*steps, *judges) if p is not None]
        total = combine(parts, "cascade(" + ",".join(tiers) + ")")
        within_max_price(request, total)
        body = {
            **steps[0].body,
            "cascade": {
                "steps": [
                    {
                        "tier": tier,
                        "body": step.body,
                        "judge": judge.body if judge else None,
                        "draft_bytes": size,
                    }
                    for tier, step, judge, size in zip(
                        tiers, steps, judges, draft_bytes, strict=True
                    )
                ],
                "min_confidence": rules.min_confidence,
            },
        }
        first = steps[0].decision
        return Priced(total, body, Decision(CASCADE, first.privacy, first.task_class))
