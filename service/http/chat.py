"""``POST /v1/chat/completions``: OpenAI-compatible, paid by API key or by L402.

- ``Authorization: Bearer <API key or task token>``: the maximum price is reserved from that
  credit, the call runs, and the reconciler settles the actual cost later.
- No credential: HTTP 402 with ``WWW-Authenticate: L402 macaroon=..., invoice=...`` (and the
  ``LSAT`` form) for this exact request's maximum price.
- ``X-Cashu: cashuB...`` (Routstr's RIP-01): the token pays this request; change comes back in
  the ``X-Cashu`` response header (see :mod:`.cashu`). ``Authorization: Bearer cashuB...``
  opens a prepaid balance with the token, which is its key from then on.
- ``Authorization: L402 <macaroon>:<preimage>``: the paid request runs once; repeating it returns
  the same answer without running it again. The token's change is credit for later requests
  with the same credential (which run only if that credit covers their maximum price) and can be
  withdrawn.

Every 402 here carries a fresh challenge for the request it refuses: also when a token's credit
is short for another request (``insufficient_balance``) and when a token has expired
(``l402_expired``). Clients that keep one token per URL (``l402-requests``, Alby's
``fetchWithL402``) pay a challenge whenever they meet one, and would stall on a 402 without it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from typing import Any

from aiohttp import web

from billing.l402 import L402Error, request_digest
from billing.store import TaskRow

from ..tasks.engine import Chat, Engine, L402Payment
from ..tasks.offers import mint_gate
from ..tasks.quotes import StoredQuote
from ..tasks.record import record_of
from ..tasks.redeems import redeem_gate
from ..tasks.refusals import Refusal
from . import offers, sse
from .auth import l402_refusal, payer_of
from .cashu import cashu_checked, cashu_headers, cashu_token, is_cashu
from .keys import ENGINE, L402, LIMITER, STORE
from .limits import Kind, kind_of
from .problems import Problem, parse_json, problem_of
from .schemas import ChatRequest, parse
from .views import price_view

routes = web.RouteTableDef()


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    began = time.perf_counter()
    engine = request.app[ENGINE]
    raw = await request.read()
    chat = parse(ChatRequest, parse_json(raw))
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    scheme = scheme.upper()
    paid_form = scheme in ("L402", "LSAT", "PAYMENT") or "PAYMENT-SIGNATURE" in request.headers
    # Admitted as a paid form, not as asking for an invoice: a fresh offer it ends in is
    # counted as one then (and only for this request).
    gated = kind_of(request) is Kind.L402 and LIMITER in request.app
    gate = functools.partial(request.app[LIMITER].admit_invoice, request) if gated else None
    reset = mint_gate.set(gate)
    # Any Cashu token it redeems (X-Cashu, or Bearer cashu... opening a balance) is counted
    # per address, whatever else the request carries.
    limiter = request.app.get(LIMITER)
    counted = kind_of(request) is Kind.REDEEM  # as a redeem already, by the middleware
    reset_redeems = redeem_gate.set(
        functools.partial(limiter.admit_redeem, request) if limiter and not counted else None
    )
    try:
        return await _answer(request, engine, chat, raw, scheme, credential, paid_form, began)
    finally:
        mint_gate.reset(reset)
        redeem_gate.reset(reset_redeems)


async def _answer(
    request: web.Request,
    engine: Engine,
    chat: ChatRequest,
    raw: bytes,
    scheme: str,
    credential: str,
    paid_form: bool,
    began: float,
) -> web.StreamResponse:
    answered: dict[str, str] = {}  # what a paid form adds to a 2xx answer (receipts)
    credit: str | None = None  # the macaroon of a paid form's token, for its error answers
    token = cashu_token(request)
    try:
        if token is not None:  # RIP-01: the token pays this request; its change comes back
            outcome = await engine.chat(None, chat, stream=chat.stream, cashu=token)
        elif scheme in ("L402", "LSAT"):
            paid = await _l402(request, engine, chat, raw)
            outcome = await engine.chat(None, chat, stream=chat.stream, l402=paid)
        elif scheme == "BEARER" and credential.strip():
            secret = credential.strip()
            if is_cashu(secret):  # RIP-01: the token opens a balance and is its key
                payer = await engine.cashu_account(cashu_checked(secret))
            else:
                payer = await payer_of(request.app[STORE], secret)
            outcome = await engine.chat(payer, chat, stream=chat.stream)
        elif paid_form:
            pay = offers.mpp_payment if scheme == "PAYMENT" else offers.x402_payment
            try:
                presented = await pay(request, engine, raw)
            except Refusal as refused:  # not a payment it can take: a fresh offer
                raise await engine.challenge(chat, request_digest(raw), refused=refused) from None
            answered, credit = presented.headers, presented.macaroon
            try:
                outcome = await engine.chat(None, chat, stream=chat.stream, l402=presented.paid)
            except Refusal as refusal:
                if refusal.kind == "price_changed":  # the payment is credit on this token
                    refusal.extra["credit_macaroon"] = credit
                raise
        else:
            raise await engine.challenge(chat, request_digest(raw))
    except Refusal as refusal:
        raise await _shown(request, refusal, raw) from None
    return await _render(request, engine, outcome, chat.stream, began, answered, credit)


async def _shown(request: web.Request, refusal: Refusal, raw: bytes) -> Problem:
    """A refusal as answered here: a challenge's price as agents see prices, and its offer in
    each form (L402, MPP, x402)."""
    price = refusal.extra.get("price")
    if isinstance(price, StoredQuote):
        refusal.extra["price"] = price_view(price.dump()).model_dump()
    problem = problem_of(refusal)
    if refusal.challenge is not None:
        problem = await offers.show(request, problem, refusal.challenge, raw)
    return problem


async def _render(
    request: web.Request,
    engine: Engine,
    outcome: Chat,
    stream: bool,
    began: float,
    answered: dict[str, str],
    credit: str | None,
) -> web.StreamResponse:
    if outcome.replay:
        return _replay_paid(outcome.task, answered)
    headers = {
        "X-Satrouter-Task": outcome.task.id,
        "X-Satrouter-Max-Price-Msat": str(outcome.max_price_msat),
    }
    headers.update(cashu_headers(outcome))
    if outcome.tier:
        headers["X-Satrouter-Tier"] = outcome.tier
    if outcome.task_class:
        headers["X-Satrouter-Class"] = outcome.task_class
    if outcome.events is not None:
        return await _stream(request, outcome.events, headers | answered)
    if outcome.failed:
        detail = "every model failed; nothing was charged"
        if not stream or record_of(outcome.task).several:
            detail += f" ({outcome.error})"
        # No receipt on an error; the refund is credit on the token this macaroon reads, and
        # the same paid request may be repeated (it runs again on that credit).
        extra = {"credit_macaroon": credit} if credit else None
        raise Problem(502, "upstream_failed", detail, headers=headers, extra=extra)
    headers |= answered
    assert outcome.answer is not None
    upstream = record_of(outcome.task).upstream_seconds
    if engine.metrics is not None and upstream is not None:
        engine.metrics.added_seconds.observe(max(0.0, time.perf_counter() - began - upstream))
    if stream:  # consensus and cascade answer once every call is in: one chunk
        return await _replay(request, outcome.answer, headers)
    return web.json_response(outcome.answer, headers=headers)


async def _replay(
    request: web.Request, answer: dict[str, Any], headers: dict[str, str]
) -> web.StreamResponse:
    """A finished completion sent as a stream: one chunk with the message (its content, or
    its tool calls), the finish, the usage."""
    choice = (answer.get("choices") or [{}])[0]
    base = {k: answer.get(k) for k in ("id", "model", "provider", "created")}
    base["object"] = "chat.completion.chunk"
    message = choice.get("message") or {}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if tool_calls := message.get("tool_calls"):
        # As streamed tool calls arrive: each with its index, the arguments whole.
        delta["content"] = message.get("content")
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
    events: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}],
        },
        {**base, "choices": [], "usage": answer.get("usage")},
    ]
    events[-1].update({k: answer[k] for k in ("consensus", "cascade") if k in answer})
    response = await sse.open_stream(request, headers)
    with contextlib.suppress(ConnectionResetError):  # the caller left: it was answered
        for event in events:
            await sse.send(response, json.dumps(event))
        await sse.send(response, "[DONE]")
        await response.write_eof()
    return response


async def _stream(request: web.Request, events: Any, headers: dict[str, str]) -> web.StreamResponse:
    """Send the engine's events as they come. However this ends (the caller leaving
    included) closing ``events`` records what ran, and it is billed."""
    async with contextlib.aclosing(events):
        first = await anext(events)  # started: closing it now records the call
        response = web.StreamResponse(headers={**headers, **sse.HEADERS})
        try:
            await response.prepare(request)
            await sse.send(response, first)
            async for data in events:
                await sse.send(response, data)
        except ConnectionResetError:
            return response  # the caller left mid-stream: what ran is billed all the same
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _l402(request: web.Request, engine: Engine, chat: ChatRequest, raw: bytes) -> L402Payment:
    """The verified L402 credential; a fresh challenge if it expired, 401 if it is wrong."""
    authority = request.app[L402]
    header = request.headers["Authorization"]
    digest = request_digest(raw)
    bound = True
    try:
        try:
            grant = await authority.verify(header, digest=digest, is_settled=engine.confirm)
        except L402Error as exc:
            if exc.reason != "wrong_request":
                raise
            # another request: it may run on the credit left on the token
            grant = await authority.verify(header, digest=None, is_settled=engine.confirm)
            bound = False
    except L402Error as exc:
        if exc.reason == "expired":  # a new token is one payment away: offer it
            raise await engine.challenge(
                chat, digest, refused=Refusal(f"l402_{exc.reason}", exc.detail)
            ) from None
        raise l402_refusal(exc) from None
    return L402Payment(grant.token_id, grant.max_price, digest, bound)


def _replay_paid(task: TaskRow, answered: dict[str, str]) -> web.Response:
    """A repeat of a paid request: the same answer, nothing runs (409 while it still runs)."""
    result = record_of(task).result
    if result is None:
        raise Problem(409, "l402_already_used", "this request was already run")
    return web.json_response(
        result, headers={**answered, "X-Satrouter-Task": task.id, "X-Satrouter-Replay": "true"}
    )
