"""The aiohttp application: routes, the shared clients, and the engine's workers.

``create_app(settings)`` wires everything from settings; every long-lived resource lives in a
``cleanup_ctx`` so it is opened on start-up and closed on shutdown in reverse order: one HTTP
``ClientSession`` (OpenRouter, LNbits, price sources), the database, the Lightning backend, the
catalog refresher, and the engine's workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shlex
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import aiohttp
from aiohttp import web

from billing.alerts import Thresholds
from billing.budget import Budgets, Cap
from billing.l402 import L402Authority
from billing.lightning import LightningBackend
from billing.lightning.lnbits import LnbitsBackend
from billing.lightning.lnd import LndBackend, StoredIndex, lnd_channel, macaroon_hex
from billing.money import Msat, NanoUsd, Rounding
from billing.payouts import Payouts
from billing.pricing import PricingPolicy
from billing.rates import FixedRate, RateOracle, RateProvider
from billing.store import Store, open_store
from billing.topup import (
    CommandExecutor,
    Credits,
    Executor,
    InvoiceUrlExecutor,
    ManualExecutor,
    TopupController,
    TopupPolicy,
)

from .alerts import AlertWorker
from .balance import BalanceWatcher
from .books import BooksWatcher
from .config import ConfigError, Settings
from .ecash.wallet import EcashWallet
from .http import accounts, admin, agents, cashu, chat, discovery, health, mcp_server
from .http.keys import BALANCE, BOOKS, ENGINE, L402, LIMITER, SETTINGS, STORE
from .http.limits import Limiter, Rates, networks
from .http.problems import problem_middleware, quiet_unparseable_requests
from .http.request_ids import echo_request_id, request_context
from .http.security import hide_versions, secure_headers
from .http.views import task_view
from .metrics import METRICS, Metrics
from .routing.breaker import Breakers
from .routing.fallback import FallbackRunner
from .routing.policy import PolicyError, PolicyHolder
from .routing.policy import builtin as policy_builtin
from .routing.policy import load as policy_load
from .routing.privacy import PrivacyMode
from .singletons import run_alone
from .tasks.callbacks import CallbackSender
from .tasks.destinations import PublicResolver
from .tasks.engine import Engine, EngineConfig, Hooks
from .tasks.leases import Lease, replica_id
from .upstream.catalog import CatalogCache, CatalogUnavailable
from .upstream.openrouter import OpenRouterClient

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024  # 1 MiB: larger requests get a 413 problem


def _lightning(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> LightningBackend:
    if settings.lightning == "lnbits":
        if not settings.lnbits_url or not settings.lnbits_invoice_key:
            raise ConfigError("SATROUTER_LIGHTNING=lnbits needs LNBITS_URL and LNBITS_INVOICE_KEY")
        admin = settings.lnbits_admin_key.get_secret_value() if settings.lnbits_admin_key else None
        return LnbitsBackend(
            settings.lnbits_url,
            invoice_key=settings.lnbits_invoice_key.get_secret_value(),
            admin_key=admin,
            session=session,
            timeout=settings.lnbits_timeout,
        )
    if not (settings.lnd_grpc_host and settings.lnd_tls_cert and settings.lnd_macaroon):
        raise ConfigError("SATROUTER_LIGHTNING=lnd needs LND_GRPC_HOST, LND_TLS_CERT, LND_MACAROON")
    channel = lnd_channel(
        settings.lnd_grpc_host,
        Path(settings.lnd_tls_cert).read_bytes(),
        macaroon_hex(Path(settings.lnd_macaroon).read_bytes()),
    )
    return LndBackend(channel, StoredIndex(store))


async def _policy(settings: Settings, catalog: CatalogCache) -> PolicyHolder:
    """Load the routing policy, checked against the catalog. Mistakes in the file stop the
    start; models the catalog lacks are dropped (see :mod:`service.routing.policy`)."""
    try:
        await catalog.get()
    except CatalogUnavailable:
        log.warning("no model catalog yet: the routing policy's model ids are not checked")

    def is_known(model: str) -> bool:
        # The catalog as it is when the policy is (re)loaded, not as it was at start-up.
        current = catalog.catalog
        return current is None or model in current

    try:
        policy = (
            policy_load(settings.policy, is_known) if settings.policy else policy_builtin(is_known)
        )
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    return PolicyHolder(policy, settings.policy, is_known, catalog.refresh)


def _reload_on_sighup(holder: PolicyHolder) -> None:
    pending: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            await holder.refresh_and_reload()
            log.info("routing policy reloaded from %s", holder.policy.source)
        except PolicyError as exc:
            log.error("routing policy NOT reloaded: %s", exc)

    def on_signal() -> None:
        task = asyncio.get_running_loop().create_task(reload())
        pending.add(task)  # keep a reference until it is done
        task.add_done_callback(pending.discard)

    # Only the main thread may install signal handlers (tests run the app elsewhere).
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_signal)


def ecash_wallet(settings: Settings) -> EcashWallet | None:
    """The operator's Cashu wallet, if any mint is allowed."""
    mints = settings.cashu_mint_list
    if not mints:
        return None
    return EcashWallet(
        settings.cashu_python, settings.cashu_dir, mints, timeout=settings.cashu_timeout
    )


def budgets_of(settings: Settings) -> Budgets:
    def cap(usd: Decimal | None, sat: int | None) -> Cap:
        return Cap(
            usd=NanoUsd.from_usd(usd, Rounding.DOWN) if usd is not None else None,
            sats=Msat.from_sat(sat) if sat is not None else None,
        )

    s = settings
    return Budgets(
        global_daily=cap(s.budget_daily_usd, s.budget_daily_sat),
        global_monthly=cap(s.budget_monthly_usd, s.budget_monthly_sat),
        agent_daily=cap(s.budget_agent_daily_usd, s.budget_agent_daily_sat),
        agent_monthly=cap(s.budget_agent_monthly_usd, s.budget_agent_monthly_sat),
        reset_hour=s.budget_reset_hour,
        time_zone=s.budget_time_zone,
    )


def _thresholds(settings: Settings) -> Thresholds:
    def usd(value: object) -> NanoUsd | None:
        return NanoUsd.from_usd(value, Rounding.DOWN) if value is not None else None  # type: ignore[arg-type]

    sats = settings.alert_agent_daily_spend_sat
    return Thresholds(
        daily_spend=usd(settings.alert_daily_spend_usd),
        agent_daily_spend=Msat.from_sat(sats) if sats is not None else None,
        min_margin_pct=settings.alert_min_margin_pct,
        min_runway_hours=settings.alert_min_runway_hours,
        max_discrepancy_pct=settings.alert_max_discrepancy_pct,
    )


def _topups(
    settings: Settings,
    store: Store,
    backend: LightningBackend,
    upstream: OpenRouterClient,
    rates: RateProvider,
    session: aiohttp.ClientSession,
    has_management_key: bool,
) -> TopupController:
    if not has_management_key:
        raise ConfigError("top-ups watch /credits: set OPENROUTER_MANAGEMENT_KEY")
    executor: Executor
    if settings.topup_executor == "command":
        if not settings.topup_command:
            raise ConfigError("SATROUTER_TOPUP_EXECUTOR=command needs SATROUTER_TOPUP_COMMAND")
        executor = CommandExecutor(shlex.split(settings.topup_command))
    elif settings.topup_executor == "lightning-invoice":
        if not settings.topup_invoice_url:
            raise ConfigError(
                "SATROUTER_TOPUP_EXECUTOR=lightning-invoice needs SATROUTER_TOPUP_INVOICE_URL"
            )
        executor = InvoiceUrlExecutor(session, settings.topup_invoice_url)
    else:
        executor = ManualExecutor()

    async def credits() -> Credits:
        reading = await upstream.credits()
        return Credits(
            NanoUsd.from_usd(reading.total_credits, Rounding.DOWN),
            NanoUsd.from_usd(reading.total_usage, Rounding.UP),
        )

    def usd(value: Decimal | None) -> NanoUsd | None:
        return NanoUsd.from_usd(value, Rounding.DOWN) if value is not None else None

    policy = TopupPolicy(
        floor=NanoUsd.from_usd(settings.topup_floor_usd, Rounding.DOWN),
        target_runway_hours=settings.topup_target_runway_hours,
        daily_cap=usd(settings.topup_daily_cap_usd),
        monthly_cap=usd(settings.topup_monthly_cap_usd),
    )
    return TopupController(
        store=store,
        lightning=backend,
        credits=credits,
        rates=rates,
        policy=policy,
        executor=executor,
    )


def create_app(
    settings: Settings,
    *,
    lightning: LightningBackend | None = None,
    rates: RateProvider | None = None,
    engine_config: EngineConfig | None = None,
    engine_hooks: Hooks | None = None,
) -> web.Application:
    quiet_unparseable_requests()
    metrics = Metrics()
    limiter = Limiter(
        Rates(
            settings.limit_invoices_per_address,
            settings.limit_invoices_total,
            settings.limit_accounts_per_address,
            settings.limit_writes_per_credential,
            settings.limit_payouts_per_credential,
            settings.limit_redeems_per_address,
        ),
        networks(settings.trusted_proxies),
    )
    app = web.Application(
        middlewares=[
            request_context,  # the request id, the access log line and the request metrics
            problem_middleware,
            limiter.middleware(),
        ],
        client_max_size=MAX_BODY,
    )
    hide_versions()
    app.on_response_prepare.append(secure_headers)
    app.on_response_prepare.append(echo_request_id)
    app[SETTINGS] = settings
    app[LIMITER] = limiter
    app[METRICS] = metrics
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if metrics_token is not None:  # without a token, only the separate listener serves them
        app.router.add_get("/metrics", metrics.guarded(metrics_token))
    for module in (agents, chat, cashu, accounts, admin, health, mcp_server, discovery):
        app.router.add_routes(module.routes)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
            )
            store = await open_store(settings.database_url)
            stack.push_async_callback(store.close)
            backend = lightning or _lightning(settings, session, store)
            if lightning is None:
                stack.push_async_callback(backend.close)
            key = settings.openrouter_api_key
            management = settings.openrouter_management_key
            upstream = OpenRouterClient(
                base_url=settings.openrouter_base_url,
                api_key=key.get_secret_value() if key else None,
                management_key=management.get_secret_value() if management else None,
                referer=settings.openrouter_referer,
                title=settings.openrouter_title,
                timeout=settings.openrouter_timeout,
                session=session,
            )
            catalog = CatalogCache(
                upstream.models, path=settings.catalog_cache, ttl=settings.catalog_ttl
            )
            price_source = rates or (
                FixedRate(settings.btc_usd)
                if settings.btc_usd
                else RateOracle(session, max_age=settings.rate_max_age)
            )
            config = engine_config or EngineConfig(
                audit_content=settings.audit_content, budgets=budgets_of(settings)
            )
            config = replace(
                config,
                callback_allow_private=settings.callback_allow_private,
                unpaid_retention=settings.unpaid_retention,
                lease=Lease(replica_id(settings.replica_id), settings.lease_seconds),
            )
            if settings.sweep_seconds is not None:
                config = replace(config, sweep_interval=settings.sweep_seconds)
            if settings.max_concurrent_runs is not None:
                config = replace(config, max_concurrent_runs=settings.max_concurrent_runs)
            # Callbacks go out on a session of their own whose lookups return public addresses
            # only (unless private ones are allowed), so DNS rebinding connects nowhere.
            hooks = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(
                        limit=256,
                        resolver=None if config.callback_allow_private else PublicResolver(),
                    )
                )
            )
            routing = await _policy(settings, catalog)
            local = (
                OpenRouterClient(
                    base_url=settings.local_url,
                    session=session,
                    timeout=settings.openrouter_timeout,
                )
                if settings.local_url
                else None
            )
            authority = L402Authority(store)
            engine = Engine(
                store=store,
                lightning=backend,
                upstream=upstream,
                catalog=catalog,
                rates=price_source,
                policy=PricingPolicy(settings.markup_bps, Msat(settings.fee_msat)),
                routing=routing,
                config=config,
                metrics=metrics,
                callbacks=CallbackSender(
                    store,
                    hooks,
                    lambda t: task_view(t).model_dump(),
                    allow_private=config.callback_allow_private,
                    poll=config.sweep_interval,
                ),
                local_runner=FallbackRunner(local, Breakers()) if local else None,
                privacy_mode=PrivacyMode(settings.privacy_mode) if settings.privacy_mode else None,
                payouts=Payouts(
                    store,
                    backend,
                    patience=settings.payout_patience,
                    absent_after=settings.payout_absent_after,
                    owner=config.lease.owner,  # its claims renewed with the leases
                    claim_for=config.lease.seconds,
                ),
                l402=authority,
                hooks=engine_hooks,
                ecash=ecash_wallet(settings),
            )
            app[STORE] = store
            app[ENGINE] = engine
            _reload_on_sighup(routing)
            app[L402] = authority
            balance = BalanceWatcher(
                upstream,
                has_management_key=management is not None,
                metrics=metrics,
                interval=settings.balance_interval,
            )
            app[BALANCE] = balance
            books = BooksWatcher(
                store,
                backend,
                balance,
                wallet_tolerance=Msat.from_sat(settings.books_wallet_tolerance_sat),
                credits_tolerance=NanoUsd.from_usd(
                    settings.books_credits_tolerance_usd, Rounding.DOWN
                ),
                metrics=metrics,
                interval=settings.balance_interval,
                ecash=engine.ecash,
            )
            app[BOOKS] = books
            secret = settings.alert_secret
            alerting = AlertWorker(
                store,
                session,
                _thresholds(settings),
                balance=balance,
                books=books,
                webhook_url=settings.alert_webhook_url,
                secret=secret.get_secret_value() if secret else None,
            )
            # The books are opened against the world before the first request, so nothing a
            # request does is mistaken for the opening (bounded: a slow backend delays start-up
            # by a few seconds at most, and the watcher tries again later).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(books.read(), 5)
            background = [catalog.run(), balance.run(), books.run(), alerting.run()]
            if settings.topup_executor != "off":
                topups = _topups(
                    settings,
                    store,
                    backend,
                    upstream,
                    price_source,
                    session,
                    management is not None,
                )
                # One controller across replicas: two would each buy credits.
                background.append(
                    run_alone(
                        store,
                        "topups",
                        functools.partial(topups.run, settings.topup_interval),
                        settings.topup_interval,
                    )
                )
            for job in background:
                stack.callback(asyncio.create_task(job).cancel)
            if settings.metrics_port is not None:
                await stack.enter_async_context(
                    metrics.listening(settings.metrics_host, settings.metrics_port, metrics_token)
                )
            await stack.enter_async_context(engine.running())
            yield

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(mcp_server.serving)  # stopped before the engine it calls
    return app
