"""The paid-task engine.

States: ``awaiting_payment -> paid -> running -> completed -> reconciled``, with exits
``expired`` (never paid) and ``failed -> refunded``. Every transition is a compare-and-set on the
task's state, written in one transaction with its ledger entry and its outbox event, so a crash
at any point leaves either the old state or the new one, never half of each, and replaying a step
posts nothing twice (ledger idempotency keys).

Work is found by state, not by remembering it: the runner takes ``paid`` tasks, the reconciler
``completed`` ones, the expiry sweep ``awaiting_payment`` ones past their invoice's expiry. On
start-up a task found ``running`` was interrupted mid-call: it is failed and refunded rather than
run again (a call may already have reached OpenRouter; running it twice is what must never
happen).

Who pays: a task paid by invoice is paid by ``task_<id>`` (change and refunds become credit the
task token can withdraw); a prepaid call by its account ``acct_<id>``; an L402 call by its token
``l402_<token id>``. Money moves only through :mod:`billing.ledger`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from billing import audit, budget, ledger
from billing.budget import BudgetExceeded, Budgets
from billing.l402 import root_key_id
from billing.lightning import InvoiceStatus, LightningBackend, LightningError
from billing.lightning.settlement import confirmed_settlements
from billing.money import Msat, NanoUsd, Rounding, nusd_to_msat
from billing.payouts import Payouts
from billing.pricing import (
    ModelPrice,
    PricingPolicy,
    Quote,
    QuoteError,
    bound_price,
    canonical_json,
    charge,
    combine,
    input_tokens_upper_bound,
    quote,
)
from billing.rates import Rate, RateProvider, RateUnavailable
from billing.store import InvoiceRow, Store, TaskRow, Tx

from .. import logs
from ..http.problems import Problem
from ..http.schemas import ChatMessage, ChatRequest
from ..metrics import Metrics
from ..routing import cascade, consensus
from ..routing.breaker import Breakers, BreakerState
from ..routing.classifier import TaskClass, classify
from ..routing.fallback import AllModelsFailed, Attempt, FallbackRunner
from ..routing.policy import PolicyHolder
from ..routing.privacy import Detector, PrivacyMode, review
from ..upstream.catalog import Catalog, CatalogCache, CatalogUnavailable, ModelInfo
from ..upstream.errors import UpstreamError
from ..upstream.max_price import with_max_price
from ..upstream.openrouter import ChatResult, GenerationNotReady, OpenRouterClient
from ..upstream.schemas import Usage, plain
from . import destinations
from .callbacks import CallbackSender

log = logging.getLogger(__name__)

#: Model names that ask satrouter to classify the prompt and pick the tier.
AUTO = frozenset({"auto", "tier:auto"})
#: The model name that asks for a cheap draft, checked, and escalated when the check fails.
CASCADE = "cascade"


class State(enum.StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    RUNNING = "running"
    COMPLETED = "completed"
    RECONCILED = "reconciled"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


TERMINAL = frozenset({State.RECONCILED, State.EXPIRED, State.REFUNDED})
#: How many unpaid invoices one sweep expires or prunes at most (the rest wait for the next).
SWEEP_BATCH = 200
#: How many open invoices a reconnect re-checks at most.
RECHECK_MAX = 10_000
#: States of a task nobody paid for: its callback_url hears nothing of them.
UNPAID = frozenset({State.AWAITING_PAYMENT, State.EXPIRED})


@dataclass(frozen=True, slots=True)
class EngineConfig:
    invoice_expiry: int = 600
    #: max_tokens for local models when the caller sets none (they cost nothing; cloud
    #: models get their own completion limit, see Engine._completion_bound)
    default_max_tokens: int = 1024
    generation_deadline: float = 30.0
    sweep_interval: float = 1.0
    max_concurrent_runs: int = 64
    audit_content: bool = False  # put prompts and completions in the audit trail
    callback_allow_private: bool = False  # callbacks may go to loopback and private addresses
    unpaid_retention: float = 3600.0  # seconds expired unpaid state is kept before pruning
    max_listeners_per_task: int = 8  # event streams open on one task at once
    max_listeners: int = 2000  # event streams open at once in all
    budgets: Budgets = field(default_factory=Budgets)


#: Local models cost nothing upstream; the quote is the fee (and markup on nothing).
LOCAL_INFO = ModelInfo("local", "local model", None, None, ModelPrice(Decimal(0), Decimal(0)), {})


_Run = TypeVar("_Run", bound=tuple[Any, ...])  # a runner's outcome, its attempts last


def message_texts(messages: list[Any]) -> list[str]:
    return [m.content if isinstance(m.content, str) else str(m.content or "") for m in messages]


#: Content parts the quote can bound: text by its bytes, images at the per-image price.
_TEXT_PARTS = frozenset({"text"})
_IMAGE_PARTS = frozenset({"image_url"})


def _count_images(request: ChatRequest) -> int:
    """The request's input images; a 400 for parts no quote can bound (files, audio, video)."""
    images = 0
    for message in request.messages:
        for part in message.parts:
            kind = part.get("type")
            if not isinstance(kind, str):
                raise Problem(400, "invalid_content", "a content part's type must be a string")
            if kind in _IMAGE_PARTS:
                images += 1
            elif kind not in _TEXT_PARTS:
                raise Problem(
                    400,
                    "unpriceable_input",
                    f"content parts of type {str(kind)[:40]!r} cannot be priced before the "
                    "call; send text and images",
                )
    return images


@dataclass(frozen=True, slots=True)
class Priced:
    """A request with its quote and the exact body to send upstream."""

    quote: Quote
    body: dict[str, Any]
    tier: str | None = None
    privacy: dict[str, Any] | None = None  # kinds found and where the prompt may go
    task_class: TaskClass | None = None  # for "auto" and "cascade"
    #: local models to try when every cloud model failed (the policy's ``last_resort``)
    last_resort: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What the task keeps of how it was routed."""
        data: dict[str, Any] = {"tier": self.tier, "privacy": self.privacy}
        if self.last_resort:
            data["last_resort"] = list(self.last_resort)
        if self.task_class is not None:
            data["task_class"] = self.task_class.name
            data["classification"] = self.task_class.as_dict()
        return data


class Route(NamedTuple):
    request: ChatRequest
    tier: str | None
    privacy: dict[str, Any] | None
    task_class: TaskClass | None = None


def _within_max_price(request: ChatRequest, quote: Quote) -> None:
    """Refuse, before anything runs, a request that may cost more than its caller allows."""
    if request.max_price_msat is not None and quote.total.value > request.max_price_msat:
        raise Problem(
            402,
            "over_max_price",
            f"this request may cost up to {quote.total.value} msat, above its "
            f"max_price_msat of {request.max_price_msat}",
            extra={"price_msat": quote.total.value},
        )


def _call_record(result: ChatResult) -> dict[str, Any]:
    """What reconciliation needs of one call of a task that makes several."""
    usage = result.usage
    return {
        "model": result.completion.model,
        "generation_id": result.generation_id,
        "inline_cost_usd": str(usage.cost) if usage and usage.cost is not None else None,
        "inline_byok_usd": _byok_of(usage),
    }


def _byok_of(usage: Usage | None) -> str | None:
    """The provider's own cost of a call run on the operator's provider key (BYOK), which
    ``usage.cost`` (OpenRouter's fee alone) leaves out."""
    cost = usage.byok_cost if usage else None
    return str(cost) if cost is not None else None


def quote_data(q: Quote) -> dict[str, Any]:
    """A quote as stored with a task and shown to agents (``PriceBreakdown``)."""
    return {
        "model": q.model,
        "prompt_tokens_max": q.prompt_tokens_max,
        "completion_tokens_max": q.completion_tokens_max,
        "cost_max_nusd": q.cost_max.value,
        "btc_usd": str(q.rate.usd_per_btc),
        "rate_source": q.rate.source,
        "rate_at": q.rate.at,
        "cost_msat": q.cost_msat.value,
        "markup_msat": q.markup.value,
        "fee_msat": q.fee.value,
        "total_msat": q.total.value,
        "completion_bound": q.completion_bound,
        "images": q.images,
    }


def _rate_of(data: dict[str, Any]) -> Rate:
    q = data["quote"]
    return Rate(Decimal(q["btc_usd"]), q["rate_source"], q["rate_at"])


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: The store key of the server secret task tokens are derived from.
TOKEN_KEY = "secret:task_tokens"


def idem_scope(caller: str, key: str) -> str:
    """Where an Idempotency-Key lives: the hash of who sent it and the key, length-prefixed
    so no caller's key can spell another caller's (``acct_1|k`` from one caller is not key
    ``k`` of ``acct_1``). ``caller`` is the payer for credentialed requests, the client's
    address otherwise."""
    framed = f"{len(caller)}:{caller}|{key}"
    return hashlib.sha256(framed.encode()).hexdigest()


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        lightning: LightningBackend,
        upstream: OpenRouterClient,
        catalog: CatalogCache,
        rates: RateProvider,
        policy: PricingPolicy,
        config: EngineConfig | None = None,
        callbacks: CallbackSender | None = None,
        metrics: Metrics | None = None,
        runner: FallbackRunner | None = None,
    ) -> None:
        self.store = store
        self.lightning = lightning
        self.upstream = upstream
        self.catalog = catalog
        self.rates = rates
        self.policy = policy
        self.config = config or EngineConfig()
        self.callbacks = callbacks
        self.metrics = metrics
        self.runner = runner or FallbackRunner(upstream, Breakers())
        self.routing: PolicyHolder | None = None  # set by the app once the catalog is known
        #: The local OpenAI-compatible endpoint for sensitive prompts (None: not configured).
        self.local_runner: FallbackRunner | None = None
        #: Withdrawals (set by the app); their sweep runs beside the engine's workers.
        self.payouts: Payouts | None = None
        #: What a sensitive prompt does (None: local with a local endpoint, else refused).
        self.privacy_mode: PrivacyMode | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._running: set[str] = set()
        self._reconciling: set[str] = set()
        self._slots = asyncio.Semaphore(self.config.max_concurrent_runs)
        self._token_key: bytes | None = None
        #: For the dispatch-latency benchmark: when a payment's push arrived, and when its
        #: task's upstream call started.
        self.pushed: dict[str, float] = {}
        self.dispatched: dict[str, float] = {}

    # -- pricing --------------------------------------------------------------------------

    async def market(self) -> tuple[Catalog, Rate]:
        """The model catalog and the BTC/USD rate, or a 503 problem while either is unknown."""
        try:
            catalog = await self.catalog.get()
        except CatalogUnavailable as exc:
            raise Problem(503, "catalog_unavailable", str(exc)) from None
        try:
            return catalog, await self.rates.current()
        except RateUnavailable as exc:
            raise Problem(503, "rate_unavailable", str(exc)) from None

    async def price(self, request: ChatRequest) -> Priced:
        """Quote the most this request can cost, across its whole fallback chain: every input
        the upstream bills (messages, tool and output schemas, images), the completion bound,
        at prices no model or provider of the chain exceeds (sent as ``provider.max_price``)."""
        if request.consensus is not None:
            return await self._price_consensus(request)
        if request.model == CASCADE:
            return await self._price_cascade(request)
        catalog, rate = await self.market()
        request, tier, privacy, task_class = await self.route(request)
        local = privacy is not None and privacy["decision"] == "local"
        messages, schemas = request.billed_input()
        prompt_max = input_tokens_upper_bound(messages, schemas)
        images = _count_images(request)
        infos: list[ModelInfo] = []
        for model_id in request.chain:
            info = LOCAL_INFO if local else catalog.get(model_id)
            if info is None:
                raise Problem(400, "unknown_model", f"{model_id} is not a model satrouter offers")
            if info.price is None:
                raise Problem(
                    400,
                    "unpriceable_model",
                    f"{model_id} has a variable or unknown price and cannot be quoted",
                )
            if info.context_length and prompt_max > info.context_length * 4:
                raise Problem(400, "prompt_too_long", f"the prompt is too long for {model_id}")
            if images and not local and not info.price.image:
                raise Problem(
                    400,
                    "unpriceable_input",
                    f"{model_id} publishes no per-image price: its images cannot be quoted",
                )
            infos.append(info)
        limit, bound = max(self._completion_bound(info, request, local) for info in infos)
        reasoning = request.reasoning
        if reasoning is not None and reasoning.max_tokens and reasoning.max_tokens >= limit:
            raise Problem(
                400,
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
                policy=self.policy,
                images=0 if local else images,
                completion_bound=bound,
            )
        except QuoteError as exc:
            raise Problem(400, "unpriceable_model", str(exc)) from None
        _within_max_price(request, q)
        body = request.upstream_body()
        chain = request.chain
        body["model"] = chain[0]
        if len(chain) > 1:
            body["models"] = chain
        # Never let the call produce more than was paid for.
        body["max_tokens"] = q.completion_tokens_max
        if not local:
            body["provider"] = with_max_price(request.provider, price, images=bool(images))
        return Priced(q, body, tier, privacy, task_class, self._last_resort(tier, local))

    def _completion_bound(
        self, info: ModelInfo, request: ChatRequest, local: bool
    ) -> tuple[int, str]:
        """The most completion tokens ``info``'s model may bill for this request, and why:
        the caller's ``max_tokens`` within the model's limit, else the model's own limit,
        else its whole context (the prompt bound over-counts, so context minus the bound
        would not be an upper bound)."""
        requested = request.completion_limit
        if local:  # local models are free: any bound prices the same
            return requested or self.config.default_max_tokens, "local"
        cap = info.max_completion_tokens
        if requested and (cap is None or requested <= cap):
            return requested, "requested"
        if cap:
            return cap, "model_max"
        if info.context_length:
            return info.context_length, "context_length"
        raise Problem(
            400,
            "unpriceable_model",
            f"{info.id}: set max_tokens; the model publishes no completion limit",
        )

    def _last_resort(self, tier: str | None, local: bool) -> tuple[str, ...]:
        """The local models a tier-routed request may end on when every cloud model fails
        (only where the policy names a ``last_resort`` tier and a local endpoint is set). A
        request that names its own models gets those or its money back."""
        policy = self.routing.policy if self.routing is not None else None
        if policy is None or not policy.last_resort or tier is None or local:
            return ()
        return policy.tiers[policy.last_resort] if self.local_runner is not None else ()

    async def _price_consensus(self, request: ChatRequest) -> Priced:
        """Each model priced on its own; the quote is their sum."""
        spec = request.consensus
        assert spec is not None
        policy = self.routing.policy if self.routing is not None else None
        if spec.models:
            models = [policy.resolve(m) if policy else m for m in spec.models]
        elif spec.tier and policy is not None and spec.tier in policy.tiers:
            models = list(policy.tiers[spec.tier][: spec.n])
        else:
            raise Problem(400, "invalid_consensus", "name two to five models, or a known tier")
        if len(set(models)) < 2:
            raise Problem(400, "invalid_consensus", "consensus needs two different models")
        single = request.model_copy(update={"consensus": None, "models": None})
        calls = [await self.price(single.model_copy(update={"model": m})) for m in models]
        if any(c.privacy and c.privacy["decision"] == "local" for c in calls):
            raise Problem(
                422,
                "sensitive_content",
                "consensus asks cloud models; this prompt must stay local",
                extra={"kinds": calls[0].privacy["kinds"] if calls[0].privacy else []},
            )
        quote = combine([c.quote for c in calls], "consensus(" + ",".join(models) + ")")
        _within_max_price(request, quote)
        body = {
            **calls[0].body,
            "consensus": {"calls": [c.body for c in calls], "threshold": spec.threshold},
        }
        return Priced(quote, body, spec.tier, calls[0].privacy)

    async def _price_cascade(self, request: ChatRequest) -> Priced:
        """Every step of the cascade, and a judge call after each draft, priced on its own;
        the quote is their sum (what does not run comes back as change)."""
        rules = self.routing.policy.cascade if self.routing is not None else None
        if rules is None:
            raise Problem(400, "cascade_unavailable", "this satrouter's policy has no [cascade]")
        steps = [
            await self.price(request.model_copy(update={"model": f"tier:{tier}", "models": None}))
            for tier in rules.steps
        ]
        if steps[0].privacy and steps[0].privacy["decision"] == "local":
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
        quote = combine(parts, "cascade(" + ",".join(tiers) + ")")
        _within_max_price(request, quote)
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
        return Priced(quote, body, CASCADE, steps[0].privacy, steps[0].task_class)

    async def route(self, request: ChatRequest) -> Route:
        """Aliases to catalog ids; ``auto`` to the tier the prompt's class deserves;
        ``tier:<name>`` to the tier's chain, stepped down while the day's budget is low; a
        prompt with sensitive content to the local tier, or (with the agent's consent) to cloud
        models with zero data retention. Returns the request to price, its tier, the privacy
        decision and the class."""
        if self.routing is None:
            return Route(request, None, None)
        policy = self.routing.policy
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
                raise Problem(
                    503,
                    "tier_unavailable",
                    f"tier {wanted!r} is disabled: none of its models is in OpenRouter's catalog "
                    f"now; tiers: {', '.join(policy.tiers)}",
                    extra={"tier": wanted},
                )
            if wanted not in policy.tiers:
                raise Problem(
                    400, "unknown_tier", f"no tier {wanted!r}; tiers: {', '.join(policy.tiers)}"
                )
            tier = policy.step_down(wanted, await self._budget_remaining())
            if tier is None:
                day, _ = self.config.budgets.periods(time.time())
                raise Problem(
                    429,
                    "budget_exhausted",
                    "the day's budget is spent down to every tier's floor",
                    retry_after=self.config.budgets.seconds_left(day, time.time()),
                )
            chain = policy.chain(tier)
            request = request.model_copy(update={"model": chain[0], "models": chain})
        local = policy.tiers.get(policy.private_tier or "", ())
        decision = await review(
            request,
            Detector(policy.private_patterns),
            mode=self.privacy_mode,
            consent=request.allow_sensitive_cloud,
            local=self.local_runner is not None and bool(local),
        )
        if decision.action == "refuse":
            raise Problem(
                422, "sensitive_content", decision.reason, extra={"kinds": list(decision.kinds)}
            )
        if decision.action == "cloud_zdr":
            request = request.model_copy(update={"provider": dict(decision.provider or {})})
        elif decision.action == "local":
            chain = list(local)
            update = {"model": chain[0], "models": chain, "provider": None}
            return Route(
                request.model_copy(update=update),
                policy.private_tier,
                decision.record(),
                task_class,
            )
        return Route(request, tier, decision.record(), task_class)

    async def _budget_remaining(self) -> Decimal | None:
        """The fraction of the global daily dollar budget left (None without one)."""
        cap = self.config.budgets.global_daily.usd
        if cap is None or not cap.value:
            return None
        day, _ = self.config.budgets.periods(time.time())
        async with self.store.read() as tx:
            _, spent = await tx.budget_usage("global", day)
        return max(Decimal(0), 1 - Decimal(spent) / Decimal(cap.value))

    # -- events ---------------------------------------------------------------------------

    async def _move(
        self,
        tx: Tx,
        task: TaskRow,
        to: State,
        *,
        updates: dict[str, Any] | None = None,
        event: dict[str, Any] | None = None,
    ) -> TaskRow | None:
        """Compare-and-set ``task`` from its state to ``to``; None if someone moved it first."""
        now = time.time()
        data = {**task.data, **(updates or {})}
        if not await tx.update_task(
            task.id, state=to, data=data, expected_state=task.state, now=now
        ):
            return None
        payload = {"task": task.id, "status": str(to), **(event or {})}
        if data.get("callback_url") and to not in UNPAID:
            payload["notify"] = True  # the callback sender reads only these
        await tx.append_event(f"task.{to}", task.id, payload, now)
        return TaskRow(task.id, to, task.agent, data, task.created_at, now)

    def _announce(self, task: TaskRow) -> None:
        """After commit: hand the task to whoever works on its new state, and tell listeners."""
        if task.state in (State.PAID, State.COMPLETED):
            self._spawn(task)
        if self.metrics is not None:
            self.metrics.tasks.labels(task.state).inc()
        if self.callbacks is not None and task.data.get("callback_url"):
            self.callbacks.wake.set()
        for queue in self._listeners.get(task.id, ()):
            queue.put_nowait({"status": task.state, "at": task.updated_at})

    @contextlib.contextmanager
    def listen(self, task_id: str) -> Any:
        """A queue of the task's state changes while the block runs; a 429 problem past the
        bounds on listeners per task and in all (each holds a connection and a queue)."""
        listening = self._listeners.get(task_id, set())
        total = sum(len(q) for q in self._listeners.values())
        if len(listening) >= self.config.max_listeners_per_task or (
            total >= self.config.max_listeners
        ):
            raise Problem(
                429,
                "too_many_listeners",
                f"at most {self.config.max_listeners_per_task} event streams per task and "
                f"{self.config.max_listeners} in all are open at once; close one first",
                headers={"Retry-After": "5"},
            )
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.setdefault(task_id, set()).add(queue)
        try:
            yield queue
        finally:
            self._listeners[task_id].discard(queue)
            if not self._listeners[task_id]:
                del self._listeners[task_id]

    # -- creating work --------------------------------------------------------------------

    async def create_task(
        self,
        request: ChatRequest,
        *,
        payer: str | None,
        caller: str,
        callback_url: str | None,
        idempotency_key: str | None,
    ) -> tuple[TaskRow, str | None, str | None]:
        """A task for the task API: ``(task, task token, callback secret)``. With a ``payer``
        its maximum price is reserved from that credit and it is ``paid`` at once; without,
        it waits on its own invoice.

        An ``idempotency_key`` belongs to the ``caller`` that sent it (see :func:`idem_scope`):
        the same key and request from the same caller returns the first task and charges
        nothing more; the same key from anyone else is a key of theirs, a new task. A replay
        hands back the task token re-derived for that caller (the record keeps no credential);
        a task made before tokens were derived gets none, its payer reads it by its own key."""
        priced = await self.price(request)
        fingerprint = hashlib.sha256(
            repr((request.model_dump(mode="json"), callback_url)).encode()
        ).hexdigest()
        scope = idem_scope(caller, idempotency_key) if idempotency_key else None
        if scope and (earlier := await self._idempotent(f"idem:{scope}", fingerprint, scope)):
            return earlier
        if payer and idempotency_key:  # a record from before keys were scoped this way
            legacy = f"idem:{token_hash(f'{payer}|{idempotency_key}')}"
            earlier = await self._idempotent(legacy, fingerprint, None)
            if earlier is not None and earlier[0].data.get("payer") == payer:
                return earlier
        task_id = "task_" + secrets.token_hex(12)
        token = (
            await self._derived_token(scope, task_id)
            if scope
            else f"tt_{task_id}.{secrets.token_urlsafe(24)}"
        )
        if callback_url is not None:
            try:
                await destinations.check(
                    callback_url, allow_private=self.config.callback_allow_private
                )
            except destinations.DestinationRefused as exc:
                raise Problem(400, "callback_url_refused", str(exc)) from None
        # Standard Webhooks' secret form: base64 behind "whsec_".
        callback_secret = (
            "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode() if callback_url else None
        )
        data = {
            "callback_url": callback_url,
            "callback_secret": callback_secret,
            "token_hash": token_hash(token),
        }
        remember = (f"idem:{scope}", f"{task_id}|{fingerprint}") if scope else None
        if payer is not None:
            task = await self.reserve(
                payer, priced, kind="account", task_id=task_id, extra=data, remember=remember
            )
        else:
            task = await self._create_invoice_task(task_id, priced, data, remember)
        if task.id != task_id:  # a concurrent retry under the same key got there first
            assert scope is not None
            earlier = await self._idempotent(f"idem:{scope}", fingerprint, scope)
            assert earlier is not None
            return earlier
        if task.state == State.PAID:
            self._announce(task)
        return task, token, callback_secret

    async def _idempotent(
        self, record: str, fingerprint: str, scope: str | None
    ) -> tuple[TaskRow, str | None, str | None] | None:
        """The task an Idempotency-Key's ``record`` names, or a 409 if its caller used the key
        for a different request. The token is re-derived from ``scope``; a task made before
        tokens were derived (or an earlier release's record, ``scope`` None) gets none back:
        nothing is stored to give, and its payer reads it by its own key."""
        async with self.store.read() as tx:
            existing = await tx.get_value(record)
            if not existing:
                return None
            task_id, seen_fingerprint = existing.split("|")[:2]
            if seen_fingerprint != fingerprint:
                raise Problem(
                    409,
                    "idempotency_conflict",
                    "this Idempotency-Key was used for a different request",
                )
            task = await tx.task(task_id)
        assert task is not None
        token = await self._derived_token(scope, task.id) if scope else None
        if token is not None and token_hash(token) != task.data.get("token_hash"):
            token = None
        return task, token, task.data.get("callback_secret")

    async def _derived_token(self, scope: str, task_id: str) -> str:
        """The task token of a task made under an Idempotency-Key: a MAC of the key's scope
        and the task under a server secret, so a replay by the same caller gets it again
        without the token ever being stored."""
        if self._token_key is None:
            async with self.store.transaction() as tx:
                stored = await tx.get_value(TOKEN_KEY)
                if stored is None:
                    stored = secrets.token_hex(32)
                    await tx.set_value(TOKEN_KEY, stored)
            self._token_key = bytes.fromhex(stored)
        mac = hmac.new(self._token_key, f"{scope}|{task_id}".encode(), hashlib.sha256)
        return f"tt_{task_id}." + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    async def _create_invoice_task(
        self,
        task_id: str,
        priced: Priced,
        extra: dict[str, Any],
        remember: tuple[str, str] | None,
    ) -> TaskRow:
        """A task paid by its own invoice, ``awaiting_payment``; the task ``remember`` names
        instead when its key was taken meanwhile."""
        try:
            async with self.store.read() as tx:
                await budget.check(
                    tx,
                    self.config.budgets,
                    task_id,
                    priced.quote.total,
                    priced.quote.cost_max,
                    time.time(),
                )
        except BudgetExceeded as exc:
            raise self._over_budget(exc) from None
        try:
            invoice = await self.lightning.create_invoice(
                priced.quote.total, f"satrouter {task_id}", self.config.invoice_expiry
            )
        except LightningError as exc:
            raise Problem(503, "lightning_unavailable", str(exc)) from None
        now = time.time()
        data = {
            "kind": "invoice",
            "payer": task_id,
            "request": priced.body,
            "quote": quote_data(priced.quote),
            "invoice": {
                "payment_hash": invoice.payment_hash,
                "bolt11": invoice.bolt11,
                "amount_msat": invoice.amount.value,
                "expires_at": invoice.expires_at,
            },
            **extra,
            **priced.record(),
        }
        task = TaskRow(task_id, State.AWAITING_PAYMENT, task_id, data, now, now)
        logs.task_id.set(task_id)
        async with self.store.transaction() as tx:
            if remember and (taken := await self._taken(tx, remember[0])):
                return taken
            await tx.insert_task(task)
            await tx.insert_invoice(
                InvoiceRow(
                    invoice.payment_hash,
                    invoice.bolt11,
                    invoice.amount.value,
                    "task",
                    task_id,
                    "open",
                    now,
                    invoice.expires_at,
                )
            )
            await tx.append_event(
                "task.awaiting_payment",
                task_id,
                {"task": task_id, "status": "awaiting_payment"},  # nothing is sent before payment
                now,
            )
            if remember:
                await tx.set_value(*remember)
        return task

    @staticmethod
    async def _taken(tx: Tx, key: str) -> TaskRow | None:
        """Inside the write transaction: the task an Idempotency-Key already stands for."""
        existing = await tx.get_value(key)
        return await tx.task(existing.split("|")[0]) if existing else None

    @staticmethod
    def _budget_data(charge: Msat, cost: NanoUsd, now: float) -> dict[str, Any]:
        """What a call counted against the budgets, to correct at settlement."""
        return {"committed_at": now, "charge_msat": charge.value, "cost_nusd": cost.value}

    def _over_budget(self, exc: BudgetExceeded) -> Problem:
        return Problem(
            429,
            "budget_exceeded",
            exc.detail,
            extra={"scope": exc.scope.split(":")[0], "period": exc.period},
            retry_after=self.config.budgets.seconds_left(exc.period, time.time()),
        )

    async def reserve(
        self,
        payer: str,
        priced: Priced,
        *,
        kind: str,
        task_id: str | None = None,
        extra: dict[str, Any] | None = None,
        remember: tuple[str, str] | None = None,
    ) -> TaskRow:
        """A call paid from ``payer``'s credit: its maximum price moves into escrow now. A chat
        completion runs at once (``running``); a task (kind ``account``) is ``paid`` and waits
        for a worker. With ``remember`` (an Idempotency-Key's entry) a key already taken
        returns the task it stands for and reserves nothing."""
        task_id = task_id or "task_" + secrets.token_hex(12)
        now = time.time()
        state = State.PAID if kind == "account" else State.RUNNING
        data = {
            "kind": kind,
            "payer": payer,
            "request": priced.body,
            "quote": quote_data(priced.quote),
            "held_msat": priced.quote.total.value,
            "budget": self._budget_data(priced.quote.total, priced.quote.cost_max, now),
            **({"paid_at": now} if state == State.PAID else {}),
            **(extra or {}),
            **priced.record(),
        }
        task = TaskRow(task_id, state, payer, data, now, now)
        logs.task_id.set(task_id)
        event: dict[str, Any] = {"task": task_id, "status": str(state)}
        if data.get("callback_url"):
            event["notify"] = True
        try:
            async with self.store.transaction() as tx:
                if remember and (taken := await self._taken(tx, remember[0])):
                    return taken
                await tx.insert_task(task)
                await budget.commit(
                    tx, self.config.budgets, payer, priced.quote.total, priced.quote.cost_max, now
                )
                await ledger.post(tx, ledger.reserve(payer, task_id, priced.quote.total))
                await tx.append_event(f"task.{state}", task_id, event, now)
                if remember:
                    await tx.set_value(*remember)
        except BudgetExceeded as exc:
            raise self._over_budget(exc) from None
        except ledger.InsufficientFunds as exc:
            raise Problem(
                402,
                "insufficient_balance",
                f"this request may cost up to {priced.quote.total.value} msat; the balance is "
                f"{exc.balance} msat",
                extra={"price_msat": priced.quote.total.value, "balance_msat": exc.balance},
            ) from None
        return task

    # -- payments in ----------------------------------------------------------------------

    async def open_invoice_hashes(self) -> list[str]:
        """The invoices a reconnect re-checks: open and not yet expired (an expired one is
        confirmed once more when the sweep expires it). Bounded, like everything unpaid, by
        the invoice rate limits times the expiry."""
        async with self.store.read() as tx:
            return [i.payment_hash for i in await tx.open_invoices(time.time(), RECHECK_MAX)]

    async def on_settled(self, status: InvoiceStatus) -> bool:
        """Apply one confirmed settlement (idempotent). True if it changed anything."""
        if not status.settled:
            return False
        async with self.store.transaction() as tx:
            invoice = await tx.invoice(status.payment_hash)
            if invoice is None or invoice.status not in ("open", "expired"):
                return False
            if status.amount_paid < Msat(invoice.amount_msat):
                log.warning(
                    "invoice %s underpaid: %s", invoice.payment_hash[:16], status.amount_paid
                )
                return False
            await tx.set_invoice_status(invoice.payment_hash, "settled", time.time())
            paid = status.amount_paid
            moved: TaskRow | None = None
            if invoice.purpose == "task":
                task = await tx.task(invoice.ref)
                await ledger.post(
                    tx, ledger.invoice_paid_into_escrow(invoice.ref, paid, invoice.payment_hash)
                )
                if task is not None and task.state == State.AWAITING_PAYMENT:
                    now = time.time()
                    quote_total = Msat(int(task.data["quote"]["total_msat"]))
                    cost_max = NanoUsd(int(task.data["quote"]["cost_max_nusd"]))
                    try:
                        await budget.commit(
                            tx, self.config.budgets, invoice.ref, quote_total, cost_max, now
                        )
                    except BudgetExceeded as exc:  # paid, but over a cap: refund in full
                        await ledger.post(tx, ledger.refund(invoice.ref, invoice.ref, paid))
                        failed = await self._move(
                            tx,
                            task,
                            State.FAILED,
                            updates={"held_msat": paid.value, "error": f"budget: {exc.detail}"},
                        )
                        assert failed is not None
                        moved = await self._move(
                            tx, failed, State.REFUNDED, event={"refund_msat": paid.value}
                        )
                    else:
                        moved = await self._move(
                            tx,
                            task,
                            State.PAID,
                            updates={
                                "held_msat": paid.value,
                                "paid_at": now,
                                "budget": self._budget_data(quote_total, cost_max, now),
                            },
                        )
                else:  # paid after it expired: the money is the payer's credit
                    await ledger.post(tx, ledger.refund(invoice.ref, invoice.ref, paid))
            else:  # deposit to an account, or an L402 token's payment
                await ledger.post(tx, ledger.deposit(invoice.ref, paid, invoice.payment_hash))
        if moved is not None:
            self._announce(moved)
        return True

    async def confirm(self, payment_hash: str) -> bool:
        """Ask the backend now (used when a client says it paid before the push arrived)."""
        async with self.store.read() as tx:
            invoice = await tx.invoice(payment_hash)
        if invoice is None:
            return False
        if invoice.status == "settled":
            return True
        try:
            status = await self.lightning.invoice_status(payment_hash)
        except LightningError:
            return False
        await self.on_settled(status)
        return status.settled

    # -- running --------------------------------------------------------------------------

    async def start_run(self, task: TaskRow) -> TaskRow | None:
        """Move a paid task to running (None if another worker took it)."""
        async with self.store.transaction() as tx:
            moved = await self._move(tx, task, State.RUNNING)
        if moved is not None:
            self._announce(moved)
        return moved

    async def complete(
        self,
        task: TaskRow,
        result: ChatResult | None,
        *,
        usage: Usage | None = None,
        model: str | None = None,
        generation_id: str | None = None,
        upstream_seconds: float | None = None,
        attempts: list[Attempt] | None = None,
        extra: dict[str, Any] | None = None,
        answer: dict[str, Any] | None = None,
    ) -> TaskRow:
        """Record the call's result (``answer``: what the caller gets, when it is more than the
        completion); the reconciler takes it from here."""
        usage = usage or (result.usage if result else None)
        if answer is None and result is not None:
            answer = plain(result.raw)
        updates: dict[str, Any] = {
            # A prepaid caller already has its answer; tasks and L402 replays need it kept.
            "result": answer if task.data["kind"] != "prepaid" else None,
            "generation_id": generation_id or (result.generation_id if result else None),
            "model_used": model or (result.completion.model if result else None),
            "inline_cost_usd": str(usage.cost) if usage and usage.cost is not None else None,
            "inline_byok_usd": _byok_of(usage),
            "usage": usage.model_dump(mode="json") if usage else None,
            "completed_at": time.time(),
            "upstream_seconds": upstream_seconds,
            "attempts": [a.as_dict() for a in attempts or []],
            **(extra or {}),
        }
        async with self.store.transaction() as tx:
            current = await tx.task(task.id)
            assert current is not None
            if current.state != State.RUNNING:  # refunded meanwhile: see _unbilled
                await self._audit_call(
                    tx, task, "completed_after_refund", result=result, usage=usage
                )
                moved = None
            else:
                moved = await self._move(
                    tx,
                    current,
                    State.COMPLETED,
                    updates=updates,
                    event={"model": updates["model_used"]},
                )
                await self._audit_call(
                    tx, task, "completed", result=result, usage=usage, model=updates["model_used"]
                )
        if moved is None:
            self._background_job(self._unbilled(current, updates))
            return current
        self._announce(moved)
        return moved

    async def _unbilled(self, task: TaskRow, call: dict[str, Any]) -> None:
        """A call that finished after its task was refunded (another process recovered it as
        interrupted): the agent keeps its refund, and what OpenRouter billed for the call is
        booked as the operator's cost, so the credits in the books still follow the world."""
        if call.get("ran_locally") or (task.data.get("privacy") or {}).get("decision") == "local":
            return
        quoted_max = Decimal(task.data["quote"]["cost_max_nusd"]) / 10**9
        cost_usd, byok_usd, _ = await self._call_cost(
            task.id,
            call.get("generation_id"),
            call.get("inline_cost_usd"),
            call.get("inline_byok_usd"),
            quoted_max,
        )
        cost = NanoUsd.from_usd(cost_usd, Rounding.UP)
        byok = NanoUsd.from_usd(byok_usd, Rounding.UP)
        if cost.value or byok.value:
            async with self.store.transaction() as tx:
                await ledger.post(tx, ledger.unbilled_call(task.id, cost, byok=byok))
        log.warning("%s ran after it was refunded; its cost %s is the operator's", task.id, cost)

    async def fail(
        self, task: TaskRow, error: str, *, attempts: list[Attempt] | None = None
    ) -> TaskRow:
        """Every model failed (or the run was interrupted): refund everything held."""
        async with self.store.transaction() as tx:
            current = await tx.task(task.id)
            assert current is not None
            if current.state in TERMINAL:
                return current
            failed = await self._move(
                tx,
                current,
                State.FAILED,
                updates={"error": error, "attempts": [a.as_dict() for a in attempts or []]},
            )
            assert failed is not None
            await self._audit_call(tx, task, "failed", error=error)
            held = Msat(int(failed.data.get("held_msat", 0)))
            if held:
                await ledger.post(tx, ledger.refund(task.id, failed.data["payer"], held))
            await self._correct_budget(tx, task, Msat(0), NanoUsd(0))
            refunded = await self._move(
                tx, failed, State.REFUNDED, event={"refund_msat": held.value}
            )
        assert refunded is not None
        self._announce(refunded)
        return refunded

    async def _correct_budget(self, tx: Tx, task: TaskRow, charge: Msat, cost: NanoUsd) -> None:
        """Replace what the call counted against the budgets by what it really spent."""
        counted = task.data.get("budget")
        if not counted:
            return
        await budget.correct(
            tx,
            self.config.budgets,
            task.data["payer"],
            charge - Msat(counted["charge_msat"]),
            cost - NanoUsd(counted["cost_nusd"]),
            counted["committed_at"],
        )

    async def _audit_call(
        self,
        tx: Tx,
        task: TaskRow,
        outcome: str,
        *,
        result: ChatResult | None = None,
        usage: Usage | None = None,
        model: str | None = None,
        error: str | None = None,
    ) -> None:
        """One audit entry per model call: who, what ran, tokens, outcome (no text unless
        the operator turned that on)."""
        data: dict[str, Any] = {
            "task": task.id,
            "agent": task.data.get("payer"),
            "model": model or task.data["request"].get("model"),
            "provider": result.completion.provider if result else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "inline_cost_usd": str(usage.cost) if usage and usage.cost is not None else None,
            "privacy": task.data.get("privacy", "not classified"),
            "outcome": outcome,
            "error": error,
        }
        if self.config.audit_content:
            data["messages"] = task.data["request"].get("messages")
            data["completion"] = result.completion.text if result else None
        await audit.append(tx, "model_call", data, time.time())

    async def execute(self, task: TaskRow) -> tuple[TaskRow, dict[str, Any] | None]:
        """Run a ``running`` task's call (non-streaming) and record the outcome: the task
        afterwards and the answer to pass on (None if every model failed)."""
        if task.data.get("kind") == "invoice" and len(self.dispatched) < 10_000:
            self.dispatched[task.id] = time.time()
        if task.data["request"].get("consensus"):
            return await self._execute_consensus(task)
        if task.data["request"].get("cascade"):
            return await self._execute_cascade(task)
        started = time.perf_counter()
        try:
            (result, attempts), ran_locally = await self.call(task, FallbackRunner.chat)
        except AllModelsFailed as exc:
            self._observe_upstream(task.data["request"]["model"], "error", started)
            self.observe_breakers()
            log.info("%s failed upstream: %s", task.id, exc)
            last = exc.last
            error = f"{type(last).__name__}: {last.message}" if last else str(exc)
            return await self.fail(task, error, attempts=exc.attempts), None
        seconds = self._observe_upstream(result.completion.model, "ok", started)
        self.observe_breakers()
        done = await self.complete(
            task,
            result,
            upstream_seconds=seconds,
            attempts=attempts,
            extra={"ran_locally": True} if ran_locally else None,
        )
        return done, plain(result.raw)

    async def _execute_consensus(self, task: TaskRow) -> tuple[TaskRow, dict[str, Any] | None]:
        """Every model at once; the majority answer, with the agreement, is the result."""
        outcome = await consensus.run(self.runner, task.data["request"]["consensus"])
        return await self._record_several(
            task,
            "consensus",
            outcome.majority,
            outcome.answered,
            outcome.attempts,
            outcome.report,
            "every model of the consensus failed",
        )

    async def _execute_cascade(self, task: TaskRow) -> tuple[TaskRow, dict[str, Any] | None]:
        """Draft, check, escalate (see :mod:`service.routing.cascade`)."""
        outcome = await cascade.run(self.runner_for(task), task.data["request"]["cascade"])
        return await self._record_several(
            task,
            "cascade",
            outcome.answer,
            outcome.calls,
            outcome.attempts,
            outcome.report,
            "every step of the cascade failed",
        )

    async def _record_several(
        self,
        task: TaskRow,
        mode: str,
        chosen: ChatResult | None,
        calls: list[ChatResult],
        attempts: list[Attempt],
        report: Callable[[], dict[str, Any]],
        failure: str,
    ) -> tuple[TaskRow, dict[str, Any] | None]:
        """Record a request that made several calls: the chosen answer with the ``mode``'s
        report, and every call that ran, each to be reconciled and paid for."""
        self.observe_breakers()
        if chosen is None:
            return await self.fail(task, failure, attempts=attempts), None
        details = report()
        answer = {**plain(chosen.raw), mode: details}
        done = await self.complete(
            task,
            chosen,
            attempts=attempts,
            extra={mode: details, "calls": [_call_record(c) for c in calls]},
            answer=answer,
        )
        return done, answer

    async def call(
        self,
        task: TaskRow,
        run: Callable[[FallbackRunner, dict[str, Any]], Awaitable[_Run]],
    ) -> tuple[_Run, bool]:
        """``run`` the task's request on its runner; if every cloud model failed with an error
        another model may cure and the task has a last resort, once more on the local models.
        Returns the outcome (its attempts include the cloud's) and whether it ran locally."""
        try:
            return await run(self.runner_for(task), task.data["request"]), False
        except AllModelsFailed as exc:
            chain = task.data.get("last_resort")
            last = exc.last
            curable = last is None or last.retryable or last.fallback_ok
            if not chain or self.local_runner is None or not curable:
                raise
            log.info("%s: every cloud model failed; trying the local last resort", task.id)
            request = {
                **{k: v for k, v in task.data["request"].items() if k != "provider"},
                "model": chain[0],
                "models": chain,
            }
            try:
                outcome = await run(self.local_runner, request)
            except AllModelsFailed as again:
                attempts = [*exc.attempts, *again.attempts]
                raise AllModelsFailed(str(again), attempts, again.last) from None
            outcome[-1][:0] = exc.attempts  # the local run's attempts, after the cloud's
            return outcome, True

    def runner_for(self, task: TaskRow) -> FallbackRunner:
        """The local endpoint for a prompt that must stay local; OpenRouter otherwise."""
        privacy = task.data.get("privacy") or {}
        if privacy.get("decision") == "local":
            assert self.local_runner is not None, "routed locally without a local endpoint"
            return self.local_runner
        return self.runner

    def observe_breakers(self) -> None:
        if self.metrics is None:
            return
        level = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 0.5, BreakerState.OPEN: 1.0}
        for model, state in self.runner.breakers.states().items():
            self.metrics.breaker_open.labels(model).set(level[state])

    def _observe_upstream(self, model: str, outcome: str, started: float) -> float:
        seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.upstream_seconds.labels(model, outcome).observe(seconds)
        return seconds

    # -- reconciling ----------------------------------------------------------------------

    async def _call_cost(
        self,
        task_id: str,
        generation_id: str | None,
        inline: str | None,
        inline_byok: str | None,
        quoted_max: Decimal,
    ) -> tuple[Decimal, Decimal, bool]:
        """One call's cost in dollars, split into what OpenRouter's credits paid and what the
        operator's own provider key paid (BYOK: ``usage.cost`` and ``/generation``'s
        ``total_cost`` are then only OpenRouter's fee, the provider's cost is
        ``upstream_inference_cost``), and whether it is provisional: OpenRouter's record when
        it appears in time, else the inline cost, else (neither) the quoted maximum."""
        byok = Decimal(inline_byok) if inline_byok is not None else Decimal(0)
        if not generation_id:
            return (Decimal(inline) if inline is not None else Decimal(0)), byok, False
        try:
            generation = await self.upstream.generation(
                generation_id, deadline=self.config.generation_deadline
            )
            return generation.total_cost, generation.byok_cost, False
        except GenerationNotReady:
            pass
        except UpstreamError as exc:
            log.warning("%s: generation lookup failed: %r", task_id, exc)
        if inline is None:
            return quoted_max, Decimal(0), True
        return Decimal(inline), byok, True

    async def reconcile(self, task: TaskRow) -> TaskRow | None:
        """Settle a completed task from OpenRouter's authoritative cost."""
        quoted_max = Decimal(task.data["quote"]["cost_max_nusd"]) / 10**9
        byok_usd = Decimal(0)
        if (task.data.get("privacy") or {}).get("decision") == "local" or task.data.get(
            "ran_locally"
        ):
            cost_usd, provisional = Decimal(0), False  # local models cost nothing upstream
        elif calls := task.data.get("calls"):  # consensus: every call's own cost
            parts = await asyncio.gather(
                *(
                    self._call_cost(
                        task.id,
                        c["generation_id"],
                        c["inline_cost_usd"],
                        c.get("inline_byok_usd"),
                        quoted_max / len(calls),
                    )
                    for c in calls
                )
            )
            cost_usd = sum((c for c, _, _ in parts), Decimal(0))
            byok_usd = sum((b for _, b, _ in parts), Decimal(0))
            provisional = any(p for _, _, p in parts)
        else:
            cost_usd, byok_usd, provisional = await self._call_cost(
                task.id,
                task.data.get("generation_id"),
                task.data.get("inline_cost_usd"),
                task.data.get("inline_byok_usd"),
                quoted_max,
            )
        credits = NanoUsd.from_usd(cost_usd, Rounding.UP)
        byok = NanoUsd.from_usd(byok_usd, Rounding.UP)
        cost = credits + byok
        rate = _rate_of(task.data)
        held = Msat(int(task.data["held_msat"]))
        bill = charge(cost, paid=held, rate=rate, policy=self.policy)
        margin = bill.total - nusd_to_msat(cost, rate.usd_per_btc, Rounding.UP)
        updates = {
            "cost_nusd": cost.value,
            "byok_cost_nusd": byok.value,
            "charge_msat": bill.total.value,
            "change_msat": bill.change.value,
            "margin_msat": margin.value,
            "provisional": provisional,
            "capped": bill.capped,
            "reconciled_at": time.time(),
        }
        async with self.store.transaction() as tx:
            current = await tx.task(task.id)
            if current is None or current.state != State.COMPLETED:
                return None
            await ledger.post(
                tx,
                ledger.settle(task.id, task.data["payer"], held, bill.total, credits, byok=byok),
            )
            await self._correct_budget(tx, task, bill.total, cost)
            moved = await self._move(
                tx,
                current,
                State.RECONCILED,
                updates=updates,
                event={"charge_msat": bill.total.value, "change_msat": bill.change.value},
            )
        if moved is not None:
            self._announce(moved)
            log.info(
                "%s reconciled",
                task.id,
                extra={
                    "status": str(State.RECONCILED),
                    "cost_nusd": cost.value,
                    "charge_msat": bill.total.value,
                    "change_msat": bill.change.value,
                },
            )
            if self.metrics is not None:
                model_used = str(task.data.get("model_used") or task.data["quote"]["model"])
                self.metrics.revenue_msat.labels(model_used).inc(bill.total.value)
                self.metrics.cost_nusd.labels(model_used).inc(cost.value)
                self.metrics.margin_msat.labels(model_used).inc(margin.value)
                completed_at = task.data.get("completed_at")
                if completed_at:
                    self.metrics.reconciliation_lag.observe(time.time() - completed_at)
        return moved

    # -- workers --------------------------------------------------------------------------

    async def recover(self) -> int:
        """Start-up: a task left ``running`` was interrupted mid-call; refund it."""
        async with self.store.read() as tx:
            interrupted = await tx.tasks_in_states([State.RUNNING])
        for task in interrupted:
            await self.fail(task, "interrupted by a restart while running; refunded")
        return len(interrupted)

    def _pushed(self, payment_hash: str | None) -> None:
        if payment_hash is not None and len(self.pushed) < 10_000:
            self.pushed.setdefault(payment_hash, time.time())

    async def settlement_worker(self) -> None:
        async for status in confirmed_settlements(
            self.lightning, self.open_invoice_hashes, on_hint=self._pushed
        ):
            try:
                await self.on_settled(status)
            except Exception:
                log.exception("applying settlement %s failed", status.payment_hash[:16])

    async def _run_one(self, task: TaskRow) -> None:
        logs.task_id.set(task.id)  # this runs in a task of its own: its lines name the task
        logs.payer_id.set(task.agent)
        async with self._slots:
            try:
                running = await self.start_run(task)
                if running is not None:
                    await self.execute(running)
            except Exception:
                log.exception("running %s failed", task.id)
            finally:
                self._running.discard(task.id)

    async def _reconcile_one(self, task: TaskRow) -> None:
        logs.task_id.set(task.id)
        logs.payer_id.set(task.agent)
        try:
            await self.reconcile(task)
        except Exception:
            log.exception("reconciling %s failed", task.id)
        finally:
            self._reconciling.discard(task.id)

    def _spawn(self, task: TaskRow) -> None:
        """Start work on a paid or completed task unless it is already in hand."""
        if task.state == State.PAID and task.id not in self._running:
            self._running.add(task.id)
            job = asyncio.create_task(self._run_one(task))
        elif task.state == State.COMPLETED and task.id not in self._reconciling:
            self._reconciling.add(task.id)
            job = asyncio.create_task(self._reconcile_one(task))
        else:
            return
        self._background_job(job)

    def _background_job(self, job: Coroutine[Any, Any, None] | asyncio.Task[None]) -> None:
        """Keep a reference to work that runs on its own until it is done."""
        task = job if isinstance(job, asyncio.Task) else asyncio.create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def work_worker(self) -> None:
        """The safety net behind the direct hand-offs: on start and then every sweep
        interval, pick up paid and completed tasks nobody holds, expire unpaid invoices (by
        index, in batches) and prune what stayed unpaid past the retention."""
        pruned_at = 0.0
        while True:
            now = time.time()
            async with self.store.read() as tx:
                ready = await tx.tasks_in_states([State.PAID, State.COMPLETED])
                expiring = await tx.expired_open_invoices(now, SWEEP_BATCH)
                waiting = await tx.count_open_invoices()
            for task in ready:
                self._spawn(task)
            if self.metrics is not None:
                self.metrics.open_invoices.set(waiting)
            for invoice in expiring:
                await self._expire(invoice)
            if now - pruned_at >= min(60.0, max(self.config.unpaid_retention, 1.0)):
                await self._prune(now - self.config.unpaid_retention)
                pruned_at = now
            await asyncio.sleep(self.config.sweep_interval)

    async def _expire(self, invoice: InvoiceRow) -> None:
        """An invoice past its expiry: paid at the last moment after all, or expired (with
        its task, if it was a task's)."""
        if await self.confirm(invoice.payment_hash):
            return
        moved: TaskRow | None = None
        async with self.store.transaction() as tx:
            if not await tx.set_invoice_status(invoice.payment_hash, "expired", None):
                return
            task = await tx.task(invoice.ref) if invoice.purpose == "task" else None
            if task is not None and task.state == State.AWAITING_PAYMENT:
                moved = await self._move(tx, task, State.EXPIRED)
        if moved is not None:
            self._announce(moved)

    async def _prune(self, before: float) -> None:
        """Forget unpaid invoices, challenges and tasks that expired before ``before``."""
        while True:
            async with self.store.transaction() as tx:
                stale = await tx.expired_invoices(before, SWEEP_BATCH)
                for invoice in stale:
                    root = None
                    if invoice.purpose == "l402":
                        token_id = invoice.ref.removeprefix("l402_")
                        root = root_key_id(invoice.payment_hash, token_id)
                    await tx.delete_unpaid(invoice, root)
            if len(stale) < SWEEP_BATCH:
                return
            await asyncio.sleep(0)  # let requests in between batches

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Recover, then run the workers until the block exits."""
        await self.recover()
        workers = [
            asyncio.create_task(self.settlement_worker()),
            asyncio.create_task(self.work_worker()),
        ]
        if self.callbacks is not None:
            workers.append(asyncio.create_task(self.callbacks.run()))
        if self.payouts is not None:  # finishes payouts a crash left open, then keeps looking
            workers.append(asyncio.create_task(self.payouts.run(self.config.sweep_interval)))
        try:
            yield
        finally:
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
