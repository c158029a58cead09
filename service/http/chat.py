"""``POST /v1/chat/completions``: OpenAI-compatible, paid by API key or by L402.

- ``Authorization: Bearer <API key or task token>``: the maximum price is reserved from that
  credit, the call runs, and the reconciler settles the actual cost later.
- No credential: HTTP 402 with ``WWW-Authenticate: L402 macaroon=..., invoice=...`` (and the
  ``LSAT`` form) for this exact request's maximum price.
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
import json
import secrets
import time
from typing import Any

from aiohttp import web

from billing.l402 import L402Error, challenge, request_digest
from billing.store import InvoiceRow, TaskRow

from ..routing.fallback import AllModelsFailed, FallbackRunner
from ..tasks.engine import Engine, Priced, quote_data
from ..upstream.errors import UpstreamError
from . import sse
from .auth import l402_refusal, payer_of
from .keys import ENGINE, L402, STORE
from .problems import Problem, parse_json
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
    if scheme in ("L402", "LSAT"):
        return await _l402_paid(request, engine, chat, raw, began)
    if scheme == "BEARER" and credential.strip():
        payer = await payer_of(request.app[STORE], credential.strip())
        priced = await engine.price(chat)
        task = await engine.reserve(payer, priced, kind="prepaid")
        return await _run(request, engine, task, priced, chat.stream, began)
    raise await _l402_challenge(request, engine, chat, raw)


async def _run(
    request: web.Request,
    engine: Engine,
    task: TaskRow,
    priced: Priced,
    stream: bool,
    began: float,
) -> web.StreamResponse:
    headers = {
        "X-Satrouter-Task": task.id,
        "X-Satrouter-Max-Price-Msat": str(priced.quote.total.value),
    }
    if priced.tier:
        headers["X-Satrouter-Tier"] = priced.tier
    if priced.task_class:
        headers["X-Satrouter-Class"] = priced.task_class.name
    several = any(k in task.data["request"] for k in ("consensus", "cascade"))
    if stream and not several:
        return await _stream(request, engine, task, headers)
    done, answer = await engine.execute(task)
    upstream = done.data.get("upstream_seconds")
    if engine.metrics is not None and upstream is not None:
        total = time.perf_counter() - began
        engine.metrics.added_seconds.observe(max(0.0, total - upstream))
    if answer is None:
        raise Problem(
            502,
            "upstream_failed",
            f"every model failed; nothing was charged ({done.data.get('error')})",
            headers=headers,
        )
    if stream:  # consensus and cascade answer once every call is in: one chunk
        return await _replay(request, answer, headers)
    return web.json_response(answer, headers=headers)


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


async def _stream(
    request: web.Request, engine: Engine, task: TaskRow, headers: dict[str, str]
) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        (stream, chunks, first, attempts), ran_locally = await engine.call(
            task, FallbackRunner.stream
        )
    except AllModelsFailed as exc:
        engine.observe_breakers()
        await engine.fail(task, str(exc), attempts=exc.attempts)
        raise Problem(
            502, "upstream_failed", "every model failed; nothing was charged", headers=headers
        ) from None
    engine.observe_breakers()
    response = web.StreamResponse(headers={**headers, **sse.HEADERS})
    try:
        await response.prepare(request)
        try:
            if engine.metrics is not None:
                engine.metrics.ttft_seconds.labels(stream.model or first.model or "-").observe(
                    time.perf_counter() - started
                )
            await sse.send(response, stream.last_raw)
            async for _ in chunks:
                await sse.send(response, stream.last_raw)
            await sse.send(response, "[DONE]")
        except UpstreamError as exc:
            # After the first bytes the caller is told honestly; what ran is still billed.
            error = {
                "error": {"code": exc.code, "message": exc.message},
                "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
            }
            await sse.send(response, json.dumps(error))
    except ConnectionResetError:
        pass  # the caller left mid-stream: what ran is recorded and billed all the same
    finally:
        stream.aclose()
        await engine.complete(
            task,
            None,
            usage=stream.usage,
            model=stream.model,
            generation_id=stream.generation_id,
            attempts=attempts,
            extra={"ran_locally": True} if ran_locally else None,
        )
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


# -- L402 --------------------------------------------------------------------------------------


async def _l402_challenge(
    request: web.Request,
    engine: Engine,
    chat: ChatRequest,
    raw: bytes,
    *,
    priced: Priced | None = None,
    refused: Problem | None = None,
) -> Problem:
    """A 402 with a new invoice and macaroon for this request (its own quote). ``refused`` is
    the reason a credential sent with it could not pay, kept as the problem's type."""
    priced = priced or await engine.price(chat)
    total = priced.quote.total
    try:
        invoice = await engine.lightning.create_invoice(
            total, "satrouter L402", engine.config.invoice_expiry
        )
    except Exception as exc:
        raise Problem(503, "lightning_unavailable", str(exc)) from None
    macaroon, token_id = await request.app[L402].mint(
        invoice.payment_hash,
        digest=request_digest(raw),
        max_price=total,
        valid_for=engine.config.invoice_expiry + 86_400,
    )
    now = time.time()
    async with engine.store.transaction() as tx:
        await tx.insert_invoice(
            InvoiceRow(
                invoice.payment_hash,
                invoice.bolt11,
                total.value,
                "l402",
                f"l402_{token_id}",
                "open",
                now,
                invoice.expires_at,
            )
        )
    pay = (
        f"pay {-(-total.value // 1000)} sat and repeat the request with "
        "Authorization: L402 <macaroon>:<preimage> of this challenge"
    )
    return Problem(
        402,
        refused.kind if refused else "payment_required",
        f"{refused.detail}: {pay}" if refused else pay,
        header_lists={"WWW-Authenticate": challenge(macaroon, invoice.bolt11)},
        extra={
            **(refused.extra if refused else {}),
            "price": price_view(quote_data(priced.quote)).model_dump(),
            "invoice": invoice.bolt11,
            "macaroon": macaroon,
        },
    )


async def _l402_paid(
    request: web.Request, engine: Engine, chat: ChatRequest, raw: bytes, began: float
) -> web.StreamResponse:
    authority = request.app[L402]
    header = request.headers["Authorization"]
    bound = True
    try:
        try:
            grant = await authority.verify(
                header, digest=request_digest(raw), is_settled=engine.confirm
            )
        except L402Error as exc:
            if exc.reason != "wrong_request":
                raise
            # another request: it may run on the credit left on the token
            grant = await authority.verify(header, digest=None, is_settled=engine.confirm)
            bound = False
    except L402Error as exc:
        if exc.reason == "expired":  # a new token is one payment away: offer it
            raise await _l402_challenge(
                request, engine, chat, raw, refused=l402_refusal(exc)
            ) from None
        raise l402_refusal(exc) from None
    payer = f"l402_{grant.token_id}"
    served = f"l402:served:{grant.token_id}"
    if bound:
        async with engine.store.read() as tx:
            task_id = await tx.get_value(served)
            earlier = await tx.task(task_id) if task_id else None
        if earlier is not None:
            return _replay_paid(earlier)
    priced = await engine.price(chat)
    if not bound:
        try:
            task = await engine.reserve(payer, priced, kind="l402")
        except Problem as short:
            if short.kind != "insufficient_balance":
                raise
            detail = "the token's credit does not cover this request"
            raise await _l402_challenge(
                request,
                engine,
                chat,
                raw,
                priced=priced,
                refused=Problem(402, short.kind, detail, extra=short.extra),
            ) from None
        return await _run(request, engine, task, priced, chat.stream, began)
    if priced.quote.total > grant.max_price:
        # Prices, rates or routing (a budget's step-down) moved since the challenge: running
        # it now on what was paid would leave the difference to the operator. The payment
        # stays as credit on the token; the request gets a challenge at today's price.
        detail = (
            f"this request now costs up to {priced.quote.total.value} msat, more than the "
            f"{grant.max_price.value} msat paid for it; that payment is credit on the token"
        )
        raise await _l402_challenge(
            request, engine, chat, raw, priced=priced, refused=Problem(402, "price_changed", detail)
        )
    # The paid request runs once: its task is recorded in the transaction that reserves it,
    # so a concurrent repeat finds that task instead of running again.
    task_id = "task_" + secrets.token_hex(12)
    task = await engine.reserve(
        payer, priced, kind="l402", task_id=task_id, remember=(served, task_id)
    )
    if task.id != task_id:
        return _replay_paid(task)
    return await _run(request, engine, task, priced, chat.stream, began)


def _replay_paid(task: TaskRow) -> web.Response:
    """A repeat of a paid request: the same answer, nothing runs (409 while it still runs)."""
    if task.data.get("result") is None:
        raise Problem(409, "l402_already_used", "this request was already run")
    return web.json_response(
        task.data["result"], headers={"X-Satrouter-Task": task.id, "X-Satrouter-Replay": "true"}
    )
