"""OpenRouter's read endpoints in the emulator (``/models``, ``/generation``, ``/credits``,
``/key``) and the local server's model list."""

from __future__ import annotations

import time

from aiohttp import web

from .state import LOCAL_MODELS, STATE
from .wire import Refusal, authenticate, json_response


async def list_models(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].catalog_body)


async def get_generation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        authenticate(request, state)
        gen_id = request.query.get("id")
        if not gen_id:
            raise Refusal(400, "id: required", "invalid_request")
        generation = state.generations.get(gen_id)
        if generation is None or time.monotonic() < generation.ready_at:
            raise Refusal(404, "Generation not found", "not_found")
    except Refusal as refusal:
        return refusal.response()
    return json_response({"data": generation.record})


async def get_credits(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        if not authenticate(request, state):
            raise Refusal(403, "Only management keys can perform this operation", "forbidden")
    except Refusal as refusal:
        return refusal.response()
    return json_response(
        {"data": {"total_credits": state.config.credits, "total_usage": state.usage}}
    )


async def get_key(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        management = authenticate(request, state)
    except Refusal as refusal:
        return refusal.response()
    key = request.headers["Authorization"].split(" ", 1)[1]
    return json_response(
        {
            "data": {
                "label": f"{key[:9]}...{key[-3:]}",
                "limit": None,
                "limit_remaining": None,
                "limit_reset": None,
                "usage": state.usage,
                "usage_daily": state.usage,
                "usage_weekly": state.usage,
                "usage_monthly": state.usage,
                "is_free_tier": False,
                "is_management_key": management,
                "expires_at": None,
                "rate_limit": {"requests": -1, "interval": "10s"},
            }
        }
    )


async def list_local_models(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1735689600, "owned_by": "library"}
                for m in LOCAL_MODELS
            ],
        }
    )
