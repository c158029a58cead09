"""Operator endpoints under ``/admin/``: bearer ``SATROUTER_ADMIN_TOKEN`` (16 characters at
least, compared in constant time). With no token set they are off (403), never open."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from importlib import resources

from aiohttp import web

from billing import audit, budget, ledger
from billing.margins import GROUPS, margins, parse_since, to_csv
from billing.money import NanoUsd
from billing.runway import runway

from ..config import MIN_TOKEN_LENGTH
from ..routing.policy import PolicyError
from . import sse
from .keys import BALANCE, BOOKS, ENGINE, SETTINGS, STORE
from .problems import Problem
from .security import DASHBOARD_CSP

routes = web.RouteTableDef()
MARGIN_STATES = ("reconciled", "failed", "refunded")


def require_admin(request: web.Request) -> None:
    token = request.app[SETTINGS].admin_token
    # Settings refuse a short token; this guards settings built around that check too.
    if token is None or len(token.get_secret_value().strip()) < MIN_TOKEN_LENGTH:
        raise Problem(403, "admin_disabled", "set SATROUTER_ADMIN_TOKEN to use /admin/")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        raise Problem(
            401,
            "admin_credentials_required",
            "send Authorization: Bearer <admin token>",
            headers={"WWW-Authenticate": 'Bearer realm="satrouter-admin"'},
        )


@routes.get("/admin/margins")
async def admin_margins(request: web.Request) -> web.Response:
    """Revenue, cost and margin grouped by ``group_by``, JSON or ``format=csv``."""
    require_admin(request)
    group_by = request.query.get("group_by", "model")
    if group_by not in GROUPS:
        raise Problem(400, "invalid_group_by", f"group_by is one of {', '.join(GROUPS)}")
    answer = request.query.get("format", "json")
    if answer not in ("json", "csv"):
        raise Problem(400, "invalid_format", "format is json or csv")
    try:
        since = parse_since(request.query.get("since"))
        until = parse_since(request.query.get("until"))
    except ValueError as exc:
        raise Problem(400, "invalid_time", str(exc)) from None
    async with request.app[STORE].transaction() as tx:
        tasks = await tx.tasks_updated_between(since, until, MARGIN_STATES)
        await audit.append(
            tx, "admin", {"action": "margins", "query": dict(request.query)}, time.time()
        )
    rows = margins(tasks, group_by)
    if answer == "csv":
        return web.Response(text=to_csv(rows), content_type="text/csv")
    return web.json_response(
        {"group_by": group_by, "since": since, "until": until, "rows": [r.as_dict() for r in rows]}
    )


@routes.get("/admin/status")
async def admin_status(request: web.Request) -> web.Response:
    """The OpenRouter balance and its runway at the last 24 h of spend, the ledger check, and
    the books against the world (the wallet and the credits); ``ok`` is both checks."""
    require_admin(request)
    store, watcher = request.app[STORE], request.app[BALANCE]
    balance = watcher.latest or await watcher.read()
    body: dict[str, object] = {
        "openrouter_balance_usd": None,
        "balance_source": None,
        "balance_error": watcher.error,
        "runway_hours": None,
        "spend_per_hour_usd": None,
    }
    if balance is not None:
        left = await runway(store, balance.usd)
        body.update(
            openrouter_balance_usd=str(balance.usd.to_usd()),
            balance_source=balance.source,
            balance_at=balance.at,
            runway_hours=str(left.hours) if left.hours is not None else None,
            spend_per_hour_usd=str(left.spend_per_hour.to_usd()),
        )
    async with store.read() as tx:
        check = await ledger.check(tx)
        body["budgets"] = await budget.state(
            tx, request.app[ENGINE].config.budgets, None, time.time()
        )
    routing = request.app[ENGINE].routing
    body["routing"] = routing.policy.degradation() if routing is not None else None
    body["ledger"] = {
        "ok": check.ok,
        "problems": list(check.problems),
        "entries": check.totals.entries,
    }
    # The books against the world, read now: a mismatch fails the check like a ledger problem.
    found = await request.app[BOOKS].read()
    world_ok = all(h.matches is not False for h in found)
    body["world"] = {"ok": world_ok, "holdings": {h.name: h.as_dict() for h in found}}
    body["ok"] = check.ok and world_ok
    return web.json_response(body)


@routes.get("/admin/topups")
async def admin_topups(request: web.Request) -> web.Response:
    """The top-up history, newest first."""
    require_admin(request)
    async with request.app[STORE].read() as tx:
        rows = await tx.topups()
    return web.json_response(
        {
            "topups": [
                {
                    "id": t.id,
                    "state": t.state,
                    "usd": str(NanoUsd(t.usd_nusd).to_usd()),
                    "sats": t.amount_msat // 1000,
                    "executor": t.data.get("executor"),
                    "error": t.data.get("error"),
                    "created_at": t.created_at,
                    "updated_at": t.updated_at,
                }
                for t in reversed(rows)
            ]
        }
    )


@routes.get("/admin/events")
async def admin_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the last few task state changes, then each new one as it happens."""
    require_admin(request)
    store = request.app[STORE]
    response = await sse.open_stream(request)
    async with store.read() as tx:
        position = max(0, await tx.last_event_id() - 20)
    with contextlib.suppress(ConnectionResetError):  # the reader left
        while True:
            async with store.read() as tx:
                fresh = await tx.events_after(position, limit=100)
            for event in fresh:
                position = event.id
                payload = {k: v for k, v in event.payload.items() if k != "notify"}
                data = json.dumps({**payload, "at": event.created_at})
                await sse.send(response, data, event_id=event.id)
            if not fresh:
                await sse.keep_alive(response)
                await asyncio.sleep(0.5)
    return response


@routes.get("/admin/")
async def dashboard(request: web.Request) -> web.Response:
    """The operator's page: static, no external assets; its data needs the admin token."""
    page = resources.files("service.http").joinpath("dashboard.html").read_text()
    return web.Response(
        text=page,
        content_type="text/html",
        headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-store"},
    )


#: The dashboard's script and style, served from here so the CSP needs nothing inline.
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


@routes.get("/admin/{asset:dashboard\\.(?:js|css)}")
async def dashboard_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    return web.Response(
        text=resources.files("service.http").joinpath(name).read_text(),
        content_type=ASSETS[name],
        headers={"Cache-Control": "no-cache"},
    )


@routes.post("/admin/policy/reload")
async def reload_policy(request: web.Request) -> web.Response:
    """Reload the routing policy file; the old policy stays if the new one is invalid."""
    require_admin(request)
    holder = request.app[ENGINE].routing
    if holder is None:
        raise Problem(503, "policy_unavailable", "the service is still starting")
    try:
        policy = await holder.refresh_and_reload()
    except PolicyError as exc:
        raise Problem(400, "invalid_policy", str(exc)) from None
    async with request.app[STORE].transaction() as tx:
        await audit.append(
            tx, "admin", {"action": "policy_reload", "source": policy.source}, time.time()
        )
    tiers = {name: list(models) for name, models in policy.tiers.items()}
    return web.json_response({**policy.degradation(), "source": policy.source, "tiers": tiers})
