"""Agent endpoints: models with sat prices, quotes, and the task API (create, read, events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from billing.money import NanoUsd, Rounding, nusd_to_msat

from ..tasks.engine import TERMINAL, Engine, Priced, quote_data
from ..tasks.record import record_of
from . import sse
from .auth import bearer, payer_of, require_payer
from .keys import ENGINE, LIMITER, STORE
from .problems import Problem, read_json
from .schemas import ModelList, ModelView, QuoteView, TaskCreated, TaskRequest, parse
from .views import price_view, task_view

routes = web.RouteTableDef()
#: With no model or tier named, the policy's default tier.
DEFAULT_MODEL = "auto"


async def model_list(engine: Engine) -> ModelList:
    """The catalog with prices in msat at the current rate: ``/v1/models`` and the agent card."""
    catalog, rate = await engine.market()

    def per_mtok(price: object) -> int:
        usd = NanoUsd.from_usd(price * 1_000_000, Rounding.UP)  # type: ignore[operator]
        return nusd_to_msat(usd, rate.usd_per_btc, Rounding.UP).value

    models = [
        ModelView(
            id=info.id,
            name=info.name,
            context_length=info.context_length,
            max_completion_tokens=info.max_completion_tokens,
            prompt_msat_per_mtok=per_mtok(info.price.prompt) if info.price else None,
            completion_msat_per_mtok=per_mtok(info.price.completion) if info.price else None,
            request_msat=per_mtok(info.price.request / 1_000_000) if info.price else None,
            variable_price=info.price is None,
        )
        for info in catalog
    ]
    return ModelList(
        data=models,
        btc_usd=str(rate.usd_per_btc),
        rate_source=rate.source,
        catalog_age_s=round(catalog.age()),
    )


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    return web.json_response((await model_list(request.app[ENGINE])).model_dump())


async def _priced(request: web.Request) -> tuple[TaskRequest, Priced]:
    task_request = parse(TaskRequest, await read_json(request))
    priced = await request.app[ENGINE].quote(task_request.chat(DEFAULT_MODEL))
    return task_request, priced


@routes.post("/v1/quote")
async def post_quote(request: web.Request) -> web.Response:
    _, priced = await _priced(request)
    view = QuoteView(
        **price_view(quote_data(priced.quote)).model_dump(),
        tier=priced.tier,
        task_class=priced.task_class.name if priced.task_class else None,
    )
    return web.json_response(view.model_dump())


@routes.post("/v1/tasks")
async def create_task(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    task_request = parse(TaskRequest, await read_json(request))
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise Problem(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 chars")
    # With credentials the task is paid from that credit at once; without, by its invoice.
    payer = (
        await require_payer(request, request.app[STORE])
        if "Authorization" in request.headers
        else None
    )
    task, token, secret = await engine.create_task(
        task_request.chat(DEFAULT_MODEL),
        payer=payer,
        caller=payer or f"address:{request.app[LIMITER].address(request)}",
        callback_url=str(task_request.callback_url) if task_request.callback_url else None,
        idempotency_key=key,
    )
    view = task_view(task)
    body = TaskCreated(**view.model_dump(), task_token=token, callback_secret=secret)
    return web.json_response(
        body.model_dump(), status=201, headers={"Location": f"/v1/tasks/{task.id}"}
    )


async def _readable_task(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    secret = bearer(request)
    if secret is None:
        raise Problem(401, "credentials_required", "send Authorization: Bearer <task token>")
    payer = await payer_of(request.app[STORE], secret)
    task = await request.app[ENGINE].task(task_id)
    if task is None or payer not in (task.id, record_of(task).payer):
        raise Problem(404, "task_not_found", "no such task for these credentials")
    return task_id


@routes.get("/v1/tasks/{task_id}")
async def get_task(request: web.Request) -> web.Response:
    task_id = await _readable_task(request)
    task = await request.app[ENGINE].task(task_id)
    assert task is not None
    return web.json_response(task_view(task).model_dump())


@routes.get("/v1/tasks/{task_id}/events")
async def task_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every state change of the task, past ones first, until it ends."""
    task_id = await _readable_task(request)
    engine = request.app[ENGINE]
    with engine.listen(task_id) as queue:
        response = await sse.open_stream(request)
        with contextlib.suppress(ConnectionResetError):
            async with request.app[STORE].read() as tx:
                past = await tx.events_for(task_id)
            last = 0
            for event in past:
                last = event.id
                await _send(response, event.id, event.payload)
            done = past and past[-1].payload.get("status") in TERMINAL
            while not done:
                try:
                    await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    await sse.keep_alive(response)
                    continue
                async with request.app[STORE].read() as tx:
                    fresh = [e for e in await tx.events_for(task_id) if e.id > last]
                for event in fresh:
                    last = event.id
                    await _send(response, event.id, event.payload)
                    done = event.payload.get("status") in TERMINAL
            await response.write_eof()
    return response


async def _send(response: web.StreamResponse, event_id: int, payload: dict[str, object]) -> None:
    data = json.dumps({**payload, "at": payload.get("at", time.time())})
    await sse.send(response, data, event_id=event_id, event=str(payload.get("status")))
