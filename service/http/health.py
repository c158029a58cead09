"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from billing.margins import GROUPS
from billing.rates import RateUnavailable

from ..upstream.catalog import CatalogUnavailable
from . import schemas
from .keys import ENGINE, STORE

routes = web.RouteTableDef()
#: Seconds the Lightning backend has to answer a readiness check: a probe must not hang.
LIGHTNING_READY_TIMEOUT = 3.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    checks: dict[str, str] = {}
    try:
        async with request.app[STORE].read() as tx:
            await tx.get_value("ready")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        catalog = await engine.catalog.get()
        checks["catalog"] = f"ok ({len(catalog)} models, {catalog.age():.0f} s old)"
    except CatalogUnavailable as exc:
        checks["catalog"] = f"error: {exc}"
    try:
        rate = await engine.rates.current()
        checks["rate"] = f"ok ({rate.source})"
    except RateUnavailable as exc:
        checks["rate"] = f"error: {exc}"
    # Without the Lightning backend no task can be paid (chat answers 503): not ready. An
    # authenticated call, so a wrong key fails too; the balance itself is not shown here.
    lightning = engine.lightning
    try:
        await asyncio.wait_for(lightning.wallet_balance(), LIGHTNING_READY_TIMEOUT)
        checks["lightning"] = f"ok ({lightning.name})"
    except TimeoutError:
        checks["lightning"] = f"error: {lightning.name} did not answer in time"
    except Exception as exc:  # any failure means not ready; the probe answers all the same
        checks["lightning"] = f"error: {lightning.name}: {type(exc).__name__}"
    body: dict[str, Any] = {}
    if engine.routing is not None:
        # Degraded is still ready while one tier can serve: say what is missing, stay in.
        policy = engine.routing.policy
        body["routing"] = policy.degradation()
        if not policy.serving:
            checks["routing"] = "error: no tier has a model in the catalog"
        elif policy.disabled or policy.dropped or policy.notes:
            checks["routing"] = (
                f"ok (degraded: {len(policy.serving)} tiers serve; disabled: "
                f"{', '.join(policy.disabled) or 'none'}; models dropped: "
                f"{sum(len(m) for m in policy.dropped.values())})"
            )
        else:
            checks["routing"] = f"ok ({len(policy.serving)} tiers)"
    ready = all(v.startswith("ok") for v in checks.values())
    return web.json_response(
        {"ready": ready, "checks": checks, **body}, status=200 if ready else 503
    )


#: (method, path, request model, response model, summary)
OPERATIONS: list[tuple[str, str, type[BaseModel] | None, type[BaseModel] | None, str]] = [
    ("get", "/v1/models", None, schemas.ModelList, "Models with prices in msat"),
    ("post", "/v1/quote", schemas.TaskRequest, schemas.QuoteView, "Quote a request"),
    (
        "post",
        "/v1/chat/completions",
        schemas.ChatRequest,
        None,
        "OpenAI-compatible chat completion, paid by API key, L402, MPP, x402 or a Cashu token",
    ),
    (
        "post",
        "/v1/tasks",
        schemas.TaskRequest,
        schemas.TaskCreated,
        "Create a task and its invoice",
    ),
    ("get", "/v1/tasks/{task_id}", None, schemas.TaskView, "Read a task"),
    ("get", "/v1/tasks/{task_id}/events", None, None, "A task's state changes (SSE)"),
    ("post", "/v1/accounts", None, schemas.AccountCreated, "Create a prepaid account"),
    ("get", "/v1/accounts/me", None, schemas.AccountView, "The account's balance"),
    (
        "post",
        "/v1/accounts/deposits",
        schemas.DepositRequest,
        schemas.InvoiceView,
        "An invoice that credits the account",
    ),
    (
        "post",
        "/v1/accounts/withdrawals",
        schemas.WithdrawalRequest,
        schemas.WithdrawalView,
        "Pay the agent's invoice from its balance (202: pending, follow Location)",
    ),
    (
        "get",
        "/v1/accounts/withdrawals/{payment_hash}",
        None,
        schemas.WithdrawalView,
        "A withdrawal's state (succeeded, pending or failed)",
    ),
    (
        "post",
        "/mcp",
        None,
        None,
        "MCP over streamable HTTP (JSON-RPC, stateless): models, quotes, chat completions, "
        "tasks and the balance as tools (bearer API key)",
    ),
    (
        "get",
        "/v1/cashu/change",
        None,
        None,
        "The change of the request the Cashu token in X-Cashu paid for",
    ),
    (
        "get",
        "/v1/cashu/change/{task_id}",
        None,
        None,
        "The change of a request paid with the Cashu token in X-Cashu",
    ),
    ("get", "/healthz", None, None, "Liveness"),
    ("get", "/readyz", None, None, "Readiness"),
    ("get", "/openapi.json", None, None, "This document"),
    (
        "get",
        "/.well-known/agent-card.json",
        None,
        None,
        "A2A agent card: skills, payment schemes, prices",
    ),
    (
        "get",
        "/metrics",
        None,
        None,
        "Prometheus metrics (bearer SATROUTER_METRICS_TOKEN; without one, only on the "
        "loopback metrics listener)",
    ),
    ("get", "/admin/", None, None, "Operator dashboard (HTML)"),
    ("get", "/admin/{asset}", None, None, "The dashboard's dashboard.js and dashboard.css"),
    ("post", "/admin/policy/reload", None, None, "Operator: reload the routing policy file"),
    ("get", "/admin/topups", None, None, "Operator: top-up history (bearer admin token)"),
    ("get", "/admin/events", None, None, "Operator: live task state changes (SSE)"),
    (
        "get",
        "/admin/status",
        None,
        None,
        "Operator: OpenRouter balance, runway and the ledger check (bearer admin token)",
    ),
    (
        "get",
        "/admin/margins",
        None,
        None,
        "Operator: revenue, cost and margin (bearer admin token; group_by, since, until, format)",
    ),
]


#: The credentials each path takes; ``{}`` means none (an unpaid chat completion gets its
#: L402 challenge; an unpaid task its invoice). Paths not named here take none.
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "/v1/chat/completions": [{"bearer": []}, {"l402": []}, {"mpp": []}, {"x402": []}, {}],
    "/v1/tasks": [{"bearer": []}, {}],
    "/v1/tasks/{task_id}": [{"bearer": []}],
    "/v1/tasks/{task_id}/events": [{"bearer": []}],
    "/v1/accounts/me": [{"bearer": []}, {"l402": []}],
    "/v1/accounts/deposits": [{"bearer": []}],
    "/v1/accounts/withdrawals": [{"bearer": []}, {"l402": []}],
    "/v1/accounts/withdrawals/{payment_hash}": [{"bearer": []}, {"l402": []}],
    "/mcp": [{"bearer": []}],
    **{
        path: [{"bearer": []}]
        for _, path, *_ in OPERATIONS
        if path.startswith("/admin/") and path not in ("/admin/", "/admin/{asset}")
    },
}

#: Operations that answer 201 Created.
CREATED = {("post", "/v1/tasks"), ("post", "/v1/accounts"), ("post", "/v1/accounts/deposits")}
#: Operations that may also answer 202 Accepted with the same body (the work goes on).
ACCEPTED = {("post", "/v1/accounts/withdrawals")}

#: Query parameters, by path: (name, JSON schema).
QUERY: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "/admin/margins": [
        ("group_by", {"enum": list(GROUPS), "default": "model"}),
        ("since", {"type": "string", "description": "2026-11-20, an ISO time, or 24h / 7d / 30m"}),
        ("until", {"type": "string", "description": "as since"}),
        ("format", {"enum": ["json", "csv"], "default": "json"}),
    ],
}

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (sk-sat-...), a task token, or the admin token under /admin/",
    },
    "l402": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "L402 <base64 macaroon>:<hex preimage> (LSAT accepted)",
    },
    "mpp": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Payment <base64url credential> answering the 402's MPP lightning charge",
    },
    "x402": {
        "type": "apiKey",
        "in": "header",
        "name": "PAYMENT-SIGNATURE",
        "description": "x402 v2 payment payload (base64 JSON) naming the 402's invoice, paid",
    },
    "cashu": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Cashu",
        "description": "A Cashu token (cashuB...) from a mint the operator allows (RIP-01)",
    },
}


def _parameters(path: str) -> list[dict[str, Any]]:
    in_path = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    in_query = [{"name": n, "in": "query", "schema": s} for n, s in QUERY.get(path, [])]
    return in_path + in_query


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document, generated from the pydantic models."""
    components: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "properties": {
                **{
                    k: {"type": t}
                    for k, t in (
                        ("type", "string"),
                        ("title", "string"),
                        ("status", "integer"),
                        ("detail", "string"),
                    )
                },
                # On /v1/*: OpenAI's error object, which the OpenAI SDKs read.
                "error": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "code": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                    },
                },
            },
        }
    }
    paths: dict[str, Any] = {}
    for method, path, request_model, response_model, summary in OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "default": {
                    "description": "error",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
        }
        for model, slot in ((request_model, "request"), (response_model, "response")):
            if model is None:
                continue
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            if slot == "request":
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref}},
                }
            else:
                operation["responses"]["201" if (method, path) in CREATED else "200"] = {
                    "description": "ok",
                    "content": {"application/json": {"schema": ref}},
                }
                if (method, path) in ACCEPTED:
                    operation["responses"]["202"] = {
                        "description": "accepted, not final yet",
                        "content": {"application/json": {"schema": ref}},
                    }
        if not any(code.startswith("2") for code in operation["responses"]):
            operation["responses"]["200"] = {"description": "ok"}
        if parameters := _parameters(path):
            operation["parameters"] = parameters
        if path in SECURITY:
            operation["security"] = SECURITY[path]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "satrouter", "version": "0.1.0"},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


@functools.cache
def openapi_body() -> bytes:
    """The document as served, built once: it changes only with the code, and building it is
    tens of ms of pydantic schema work, too much to repeat for every anonymous reader."""
    return json.dumps(openapi()).encode()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=openapi_body(), content_type="application/json")
