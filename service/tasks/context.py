"""What every part of the engine shares: its settings and the clients it works through.

One :class:`Context` is built by :class:`service.tasks.engine.Engine` and handed to each part
(quotes, intake, payments, runner, outcomes, reconciler, workers); each reads it at the moment
it needs a value, so :meth:`Engine.reconfigure` (a test hook) changes them all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from billing.budget import Budgets
from billing.l402 import L402Authority
from billing.lightning import LightningBackend
from billing.payouts import Payouts
from billing.pricing import PricingPolicy
from billing.rates import RateProvider
from billing.store import Store

from ..metrics import Metrics
from ..routing.fallback import FallbackRunner
from ..routing.policy import PolicyHolder
from ..routing.privacy import PrivacyMode
from ..upstream.catalog import CatalogCache
from ..upstream.openrouter import OpenRouterClient
from .leases import Lease

if TYPE_CHECKING:  # callbacks read task records, which need this module
    from .callbacks import CallbackSender


@dataclass(frozen=True, slots=True)
class EngineConfig:
    invoice_expiry: int = 600
    #: max_tokens for local models when the caller sets none (they cost nothing; cloud
    #: models get their own completion limit, see quotes.completion_bound)
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
    #: This replica's leases on running work (its id and their length).
    lease: Lease = field(default_factory=Lease)


@dataclass(slots=True)
class Hooks:
    """Instrumentation the benchmarks attach: ``pushed(payment_hash)`` when a payment's push
    arrives, ``dispatched(task_id)`` when an invoice-paid task's upstream call starts."""

    pushed: Callable[[str], None] | None = None
    dispatched: Callable[[str], None] | None = None


@dataclass(slots=True)
class Context:
    store: Store
    lightning: LightningBackend
    upstream: OpenRouterClient
    catalog: CatalogCache
    rates: RateProvider
    policy: PricingPolicy
    config: EngineConfig
    routing: PolicyHolder
    runner: FallbackRunner
    #: The local OpenAI-compatible endpoint for sensitive prompts (None: not configured).
    local_runner: FallbackRunner | None = None
    #: What a sensitive prompt does (None: local with a local endpoint, else refused).
    privacy_mode: PrivacyMode | None = None
    payouts: Payouts | None = None
    l402: L402Authority | None = None
    callbacks: CallbackSender | None = None
    metrics: Metrics | None = None
    hooks: Hooks = field(default_factory=Hooks)
