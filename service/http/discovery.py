"""The A2A agent card at ``/.well-known/agent-card.json``.

Built from what ``/openapi.json`` is built from (:data:`health.OPERATIONS`, ``SECURITY``,
``SECURITY_SCHEMES``), from the payment-scheme registry, and from the catalog as ``/v1/models``
prices it, so that the card cannot drift from the API. Field names follow the A2A specification's
``AgentCard`` message (a2a.proto, in its JSON form). The service speaks its own HTTP API, not an
A2A binding: its one interface names OpenAPI 3.1 as a custom binding (spec section 5.8) and
``documentationUrl`` points at the document that describes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any

from aiohttp import web

from ..tasks.refusals import Refusal
from . import health
from .keys import ENGINE, SETTINGS
from .payment_schemes import PAYMENT_SCHEMES
from .problems import Problem
from .views import model_list

routes = web.RouteTableDef()

CARD_PATH = "/.well-known/agent-card.json"
#: The A2A protocol version whose AgentCard this card follows.
A2A_PROTOCOL_VERSION = "1.0"
#: A custom protocol binding is named by a URI (A2A spec section 5.8): here, OpenAPI 3.1.
OPENAPI_BINDING = "https://spec.openapis.org/oas/v3.1.0"
#: The card extension that lists payment schemes and per-model prices.
PAYMENTS_EXTENSION = "urn:satrouter:a2a:payments:v1"
#: Clients should not refetch the card on every call; prices follow the rate, so not for long.
CACHE_SECONDS = 300

DESCRIPTION = (
    "Sells LLM work to other agents for Lightning payments: quote a task, pay by L402, MPP, "
    "x402, a task invoice, a prepaid API key or Cashu ecash, get the answer routed through "
    "OpenRouter and the change back."
)


#: The OpenAPI document only changes with the code; building it takes tens of ms of pydantic
#: schema work, too much to repeat for every reader of an unauthenticated card. Read only.
_openapi = functools.cache(health.openapi)


def skill_id(method: str, path: str) -> str:
    """``post /v1/chat/completions`` -> ``post-v1-chat-completions``."""
    return "-".join([method, *re.findall(r"[a-z0-9]+", path.lower())])


def _security_scheme(spec: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI security scheme in the A2A ``SecurityScheme`` form (a one-of by field name)."""
    if spec["type"] == "http":
        return {
            "httpAuthSecurityScheme": {
                "scheme": spec["scheme"].capitalize(),
                "description": spec["description"],
            }
        }
    return {
        "apiKeySecurityScheme": {
            "location": spec["in"],
            "name": spec["name"],
            "description": spec["description"],
        }
    }


def _requirements(path: str) -> list[dict[str, Any]]:
    # An empty requirement ({} in OpenAPI: unpaid calls get their challenge) has no A2A form.
    return [
        {"schemes": {name: {"list": scopes} for name, scopes in alternative.items()}}
        for alternative in health.SECURITY.get(path, [])
        if alternative
    ]


def skills() -> list[dict[str, Any]]:
    """One skill per public ``/v1`` operation of the OpenAPI document."""
    out = []
    for method, path, request_model, _, summary in health.OPERATIONS:
        if not path.startswith("/v1/"):
            continue
        operation = f"{method.upper()} {path}"
        schemes = [s.id for s in PAYMENT_SCHEMES.values() if operation in s.operations]
        skill: dict[str, Any] = {
            "id": skill_id(method, path),
            "name": summary,
            "description": f"{operation}: {summary}"
            + (f" (request body: {request_model.__name__})" if request_model else ""),
            "tags": [method.upper(), path, *(f"payment:{s}" for s in schemes)],
            "inputModes": ["application/json"],
            "outputModes": [
                "text/event-stream" if path.endswith("/events") else "application/json"
            ],
        }
        if requirements := _requirements(path):
            skill["securityRequirements"] = requirements
        out.append(skill)
    return out


async def payments(request: web.Request) -> dict[str, Any]:
    """The payment extension's parameters: schemes, unit, and prices per model."""
    settings = request.app[SETTINGS]
    params: dict[str, Any] = {
        "schemes": [
            {
                "id": s.id,
                "name": s.name,
                "description": s.description,
                "unit": s.unit,
                "operations": list(s.operations),
                **({"securityScheme": s.security_scheme} if s.security_scheme else {}),
                **({"mints": list(settings.cashu_mint_list)} if s.id == "cashu" else {}),
            }
            for s in PAYMENT_SCHEMES.values()
            if s.enabled_by is None or getattr(settings, s.enabled_by)
        ],
        "unit": "msat",
        "priceFields": {
            "prompt_msat_per_mtok": "msat per million prompt tokens",
            "completion_msat_per_mtok": "msat per million completion tokens",
            "request_msat": "msat per request",
        },
    }
    try:
        listed = model_list(*await request.app[ENGINE].market())
    except Refusal as refusal:
        # The card still says how to pay; prices come back with the catalog and the rate.
        params["models"] = []
        params["pricesUnavailable"] = refusal.kind
        return params
    params["btcUsd"] = listed.btc_usd
    params["rateSource"] = listed.rate_source
    params["models"] = [
        {
            "id": m.id,
            "prompt_msat_per_mtok": m.prompt_msat_per_mtok,
            "completion_msat_per_mtok": m.completion_msat_per_mtok,
            "request_msat": m.request_msat,
            "variable_price": m.variable_price,
        }
        for m in listed.data
    ]
    return params


#: A Host header the card may repeat: a DNS name, IPv4 or [IPv6], and a port that is one.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?"
)


def base_url(request: web.Request) -> str:
    """The operator's public URL when set; else the origin the client reached, when the Host
    header is one (the card repeats it to every reader)."""
    public = request.app[SETTINGS].public_url
    if public:
        return public.rstrip("/")
    host = request.headers.get("Host", "")
    match = _HOST.fullmatch(host) if len(host) <= 260 else None
    if match is None or not 0 < int(match["port"] or 80) < 65536:
        raise Problem(400, "invalid_host", "the Host header is not a host name and port")
    return f"{request.scheme}://{host.lower()}"


async def agent_card(request: web.Request) -> dict[str, Any]:
    document = _openapi()
    base = base_url(request)
    schemes = document["components"]["securitySchemes"]
    return {
        "name": document["info"]["title"],
        "description": DESCRIPTION,
        "supportedInterfaces": [
            {
                "url": base,
                "protocolBinding": OPENAPI_BINDING,
                "protocolVersion": A2A_PROTOCOL_VERSION,
            }
        ],
        "version": document["info"]["version"],
        "documentationUrl": f"{base}/openapi.json",
        "capabilities": {
            "streaming": True,
            "extensions": [
                {
                    "uri": PAYMENTS_EXTENSION,
                    "description": "Accepted payment schemes and per-model prices in msat",
                    "required": False,
                    "params": await payments(request),
                }
            ],
        },
        "securitySchemes": {name: _security_scheme(spec) for name, spec in schemes.items()},
        "securityRequirements": [{"schemes": {name: {"list": []}}} for name in schemes],
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json", "text/event-stream"],
        "skills": skills(),
    }


@routes.get(CARD_PATH)
async def agent_card_json(request: web.Request) -> web.Response:
    body = json.dumps(await agent_card(request))
    # The spec asks for an ETag: a hash of the card, so a changed price is a new tag.
    tag = hashlib.sha256(body.encode()).hexdigest()[:32]
    headers = {"Cache-Control": f"public, max-age={CACHE_SECONDS}"}
    if any(etag.value in (tag, "*") for etag in request.if_none_match or ()):
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(text=body, content_type="application/json", headers=headers)
    response.etag = tag
    return response
