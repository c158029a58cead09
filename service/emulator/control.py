"""The emulator-only control API under ``/_emulator``: faults, knobs and credits set at run
time, and the requests that arrived."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from .faults import Fault
from .state import STATE
from .wire import json_response


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"code": 400, "message": message}}, status=400)


async def control_state(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = {f.name: getattr(state.config, f.name) for f in fields(state.config)}
    config.pop("management_key")
    config["catalog_path"] = str(config["catalog_path"]) if config["catalog_path"] else None
    return json_response(
        {
            "credits": state.config.credits,
            "usage": state.usage,
            "balance": state.balance,
            "faults": state.faults.as_dict(),
            "counters": state.counters,
            "generations": len(state.generations),
            "config": config,
        }
    )


async def control_set_fault(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
        model = body.pop("model")
        state.faults.set(str(model), Fault(**body))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return _bad(f"fault: {exc}")
    return json_response({"faults": state.faults.as_dict()})


async def control_clear_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.faults.clear(request.query.get("model"))
    return json_response({"faults": state.faults.as_dict()})


_SETTABLE: dict[str, Callable[[Any], Any]] = {
    "generation_delay": float,
    "ttft": float,
    "tokens_per_second": float,
    "generation_cost_ratio": lambda v: Decimal(str(v)),
    "byok": lambda v: v if isinstance(v, bool) else _not_a_bool(v),
    "credits": lambda v: Decimal(str(v)),
}


def _not_a_bool(value: Any) -> bool:
    raise ValueError(f"expected true or false, got {value!r}")


async def control_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
        updates = {k: _SETTABLE[k](v) for k, v in body.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
        return _bad(f"config: unknown or invalid setting: {exc}")
    for key, value in updates.items():
        setattr(state.config, key, value)
    return await control_state(request)


async def control_add_credits(request: web.Request) -> web.Response:
    """Add USD credits, as a purchase would."""
    state = request.app[STATE]
    try:
        amount = Decimal(str((await request.json())["amount"]))
        if not amount.is_finite() or amount <= 0:
            raise ValueError("amount must be positive")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
        return _bad(f"credits: {exc}")
    state.config.credits += amount
    return await control_state(request)


async def control_requests(request: web.Request) -> web.Response:
    return json_response({"requests": list(request.app[STATE].requests)})
