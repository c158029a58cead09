"""Prometheus metrics (``GET /metrics``), on a registry of the app's own.

Labels are bounded: routes are route templates, models come from the catalog, states and
outcomes are fixed sets; there are no per-agent or per-task labels.

The metrics tell revenue, cost and the OpenRouter balance, so they are not public: they are
served on a listener of their own (``SATROUTER_METRICS_HOST``:``SATROUTER_METRICS_PORT``,
loopback by default) and, only when ``SATROUTER_METRICS_TOKEN`` is set, on the main port behind
that bearer token (which the separate listener then asks for too).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .http.problems import Problem

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    #: Where the separate listener serves ``/metrics`` while it runs.
    listener_url: str | None = None

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "satrouter_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "satrouter_http_request_seconds",
            "HTTP request time",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tasks = Counter(
            "satrouter_task_transitions", "Tasks entering a state", ["state"], registry=r
        )
        self.upstream_seconds = Histogram(
            "satrouter_upstream_seconds",
            "Upstream call time",
            ["model", "outcome"],
            buckets=_LATENCY,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "satrouter_upstream_ttft_seconds",
            "Time to the first streamed chunk",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.added_seconds = Histogram(
            "satrouter_added_latency_seconds",
            "satrouter's own time in a paid non-streaming call (total less the upstream call)",
            buckets=_LATENCY,
            registry=r,
        )
        self.revenue_msat = Counter("satrouter_revenue_msat", "Revenue", ["model"], registry=r)
        self.cost_nusd = Counter("satrouter_cost_nusd", "OpenRouter cost", ["model"], registry=r)
        self.margin_msat = Gauge(
            "satrouter_margin_msat",
            "Margin (revenue less cost at the quote's rate) accumulated since start",
            ["model"],
            registry=r,
        )
        self.reconciliation_lag = Histogram(
            "satrouter_reconciliation_lag_seconds",
            "Completion to reconciliation",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
            registry=r,
        )
        self.open_invoices = Gauge(
            "satrouter_open_invoices", "Invoices awaiting payment", registry=r
        )
        self.breaker_open = Gauge(
            "satrouter_circuit_breaker_open",
            "1 while a model's circuit breaker keeps it out of rotation (0.5 half-open)",
            ["model"],
            registry=r,
        )
        self.openrouter_balance = Gauge(
            "satrouter_openrouter_balance_usd",
            "OpenRouter credits left (needs a management key)",
            registry=r,
        )
        self.books_difference = Gauge(
            "satrouter_books_difference",
            "What the world holds less what the books say (msat for lightning, nano-USD for "
            "openrouter)",
            ["holding"],
            registry=r,
        )
        self.books_match = Gauge(
            "satrouter_books_match",
            "1 while the books match the world within what is in flight and the tolerance",
            ["holding"],
            registry=r,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (``route`` is its template: labels stay bounded)."""
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def guarded(self, token: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
        """The handler behind ``Authorization: Bearer <token>`` (no token: as it is)."""
        if token is None:
            return self.handler
        expected = token.encode()

        async def handler(request: web.Request) -> web.Response:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected
            ):
                return Problem(
                    401,
                    "metrics_credentials_required",
                    "send Authorization: Bearer <SATROUTER_METRICS_TOKEN>",
                    headers={"WWW-Authenticate": 'Bearer realm="satrouter-metrics"'},
                ).response(request.path)
            return await self.handler(request)

        return handler

    @contextlib.asynccontextmanager
    async def listening(self, host: str, port: int, token: str | None) -> AsyncIterator[str]:
        """Serve ``/metrics`` alone on ``host:port`` (0: a free port) while open; yields the URL."""
        app = web.Application()
        app.router.add_get("/metrics", self.guarded(token))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            bound = runner.addresses[0][1]
            self.listener_url = f"http://{host}:{bound}/metrics"
            yield self.listener_url
        finally:
            self.listener_url = None
            await runner.cleanup()


METRICS = web.AppKey("metrics", Metrics)
