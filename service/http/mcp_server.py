"""satrouter as an MCP server: ``/mcp`` on the API's own port, streamable HTTP.

The ``mcp`` SDK serves the protocol (its ``MCPServer`` builds each tool's input schema from the
type hints and validates the arguments with pydantic) in stateless mode with JSON answers: each
POST is one whole exchange, nothing is kept between requests, so any replica answers any
request and the work per request is bounded. The SDK's transport is ASGI; :mod:`.asgi` hands it
the request.

Every request carries ``Authorization: Bearer <API key>`` (or a task token), checked by
:func:`~.auth.payer_of` as on the REST API, before the SDK sees it: without one the answer is
401 with ``WWW-Authenticate: Bearer``, and anonymous callers get nothing, not even the tool
list. The body is held to the REST API's limits (size, JSON depth, numbers); the rate limits are
the REST API's for a request with a credential (:mod:`.limits`).

Each tool makes the same engine call as its REST handler and answers the same view: models with
sat prices (``GET /v1/models``), a quote (``POST /v1/quote``), a chat completion paid from the
key's balance (``POST /v1/chat/completions``), a task created and read (``/v1/tasks``), the
balance (``GET /v1/accounts/me``). A refusal is a tool error (``isError``) whose structured
content is the problem the REST API would answer: its ``kind``, ``detail`` and ``status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any

from aiohttp import web
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from ..tasks.quotes import StoredQuote
from ..tasks.record import record_of
from ..tasks.refusals import Refusal
from . import asgi
from .agents import DEFAULT_MODEL
from .auth import bearer, payer_of
from .keys import ENGINE, STORE
from .problems import Problem, parse_json, problem_of
from .schemas import (
    AccountView,
    ChatRequest,
    ModelList,
    QuoteView,
    TaskCreated,
    TaskRequest,
    TaskView,
)
from .views import model_list, price_view, quote_view, task_view

PATH = "/mcp"
#: The scope key that carries the payer the request's credential names, to the tools.
PAYER = "satrouter.payer"
#: The largest MCP request body (the REST API's, see :data:`service.app.MAX_BODY`).
MAX_BODY = 1024 * 1024
SESSIONS: web.AppKey[StreamableHTTPSessionManager] = web.AppKey(
    "mcp_sessions", StreamableHTTPSessionManager
)

routes = web.RouteTableDef()


class ChatAnswer(BaseModel):
    """The ``chat_completion`` tool's answer: the completion, and what was reserved for it."""

    task_id: str
    max_price_msat: int
    tier: str | None = None
    task_class: str | None = None
    completion: dict[str, Any]


# POST only: stateless, there is no session to end (DELETE) and no stream of the server's own to
# open (GET); both are answered 405, as the transport's specification allows.
@routes.post(PATH)
async def endpoint(request: web.Request) -> web.StreamResponse:
    secret = bearer(request)
    if secret is None:
        raise Problem(
            401,
            "credentials_required",
            "send Authorization: Bearer <API key>",
            headers={"WWW-Authenticate": 'Bearer realm="satrouter"'},
        )
    payer = await payer_of(request.app[STORE], secret)
    if request.content_type != "application/json":  # as the transport requires
        raise Problem(415, "unsupported_media_type", "send JSON (Content-Type: application/json)")
    parse_json(await request.read())  # within client_max_size (or 413), and the API's JSON limits
    return await asgi.serve(request, request.app[SESSIONS].handle_request, extra={PAYER: payer})


async def serving(app: web.Application) -> AsyncIterator[None]:
    """The SDK's session manager, for the application's life (a ``cleanup_ctx``)."""
    # It logs every stateless request's end at INFO ("Terminating session: None"); the access
    # log already has each request.
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    server = tools(app)
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        max_request_body_size=MAX_BODY,
        # A browser page that rebinds a name to this host cannot send the API key it needs.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = app[SESSIONS] = server.session_manager
    # The manager's task group must be left by the task that entered it, and aiohttp may run
    # start-up and clean-up in different tasks: one task of its own holds it open.
    started, stopping = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with manager.run():
            started.set()
            await stopping.wait()

    holder = asyncio.create_task(hold())
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([holder, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if holder.done():
        holder.result()  # it failed to start: say why
    try:
        yield
    finally:
        stopping.set()
        await holder


def tools(app: web.Application) -> MCPServer:
    """The MCP server's tools, each one engine call, as the REST handler makes it."""
    server: MCPServer = MCPServer(
        "satrouter",
        instructions=(
            "LLM completions paid in sats from a prepaid satrouter account. list_models and "
            "quote show prices in msat; chat_completion runs a request and pays it from the "
            "account's balance; create_task/get_task run one as a task; get_balance reads it."
        ),
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    async def list_models() -> Annotated[CallToolResult, ModelList]:
        """The models on offer, each with its prices in msat per million tokens."""

        async def run() -> ModelList:
            return model_list(*await app[ENGINE].market())

        return await _answer(run())

    @server.tool(annotations=read_only)
    async def quote(request: TaskRequest) -> Annotated[CallToolResult, QuoteView]:
        """The most a request may cost (msat) and where it would be routed; nothing is paid.
        Without model, models or tier, the default tier ("auto") prices it."""

        async def run() -> QuoteView:
            return quote_view(await app[ENGINE].quote(request.chat(DEFAULT_MODEL)))

        return await _answer(run())

    @server.tool()
    async def chat_completion(
        request: ChatRequest, ctx: Context
    ) -> Annotated[CallToolResult, ChatAnswer]:
        """Run an OpenAI-style chat completion, routed and paid from the account's balance:
        its maximum price is reserved, the actual cost is settled once known and the rest
        stays in the balance. The answer is the whole completion (no streaming)."""

        async def run() -> ChatAnswer:
            payer = _payer(ctx)
            if request.stream:
                raise Problem(400, "invalid_request", "stream: a tool answers once; leave it false")
            outcome = await app[ENGINE].chat(payer, request)
            if outcome.answer is None:
                raise Problem(
                    502,
                    "upstream_failed",
                    f"every model failed; nothing was charged ({outcome.error})",
                    extra={"task_id": outcome.task.id},
                )
            return ChatAnswer(
                task_id=outcome.task.id,
                max_price_msat=outcome.max_price_msat,
                tier=outcome.tier,
                task_class=outcome.task_class,
                completion=outcome.answer,
            )

        return await _answer(run())

    @server.tool()
    async def create_task(
        request: TaskRequest,
        ctx: Context,
        idempotency_key: Annotated[str | None, Field(min_length=1, max_length=255)] = None,
    ) -> Annotated[CallToolResult, TaskCreated]:
        """Create a task paid at once from the account's balance; it runs in the background.
        Read it with get_task (or its task_token on the REST API). The same idempotency_key
        returns the same task instead of a second one."""

        async def run() -> TaskCreated:
            payer = _payer(ctx)
            task, token, secret = await app[ENGINE].create_task(
                request.chat(DEFAULT_MODEL),
                payer=payer,
                caller=payer,
                callback_url=str(request.callback_url) if request.callback_url else None,
                idempotency_key=idempotency_key,
            )
            view = task_view(task)
            return TaskCreated(**view.model_dump(), task_token=token, callback_secret=secret)

        return await _answer(run())

    @server.tool(annotations=read_only)
    async def get_task(
        task_id: Annotated[str, Field(min_length=1, max_length=100)], ctx: Context
    ) -> Annotated[CallToolResult, TaskView]:
        """A task of this account's (or of this task token's): its status, price, result,
        charge and change."""

        async def run() -> TaskView:
            payer = _payer(ctx)
            task = await app[ENGINE].task(task_id)
            if task is None or payer not in (task.id, record_of(task).payer):
                raise Problem(404, "task_not_found", "no such task for these credentials")
            return task_view(task)

        return await _answer(run())

    @server.tool(annotations=read_only)
    async def get_balance(ctx: Context) -> Annotated[CallToolResult, AccountView]:
        """The account's balance in msat, and where it stands against its budgets."""

        async def run() -> AccountView:
            payer = _payer(ctx)
            balance, budgets = await app[ENGINE].account(payer)
            return AccountView(id=payer, balance_msat=balance.value, budgets=budgets)

        return await _answer(run())

    return server


def _payer(ctx: Context) -> str:
    """The payer the endpoint authenticated for this request."""
    scope = getattr(ctx.request_context.request, "scope", None) or {}
    payer = scope.get(PAYER)
    if not isinstance(payer, str):  # only reachable through another transport than /mcp
        raise Problem(401, "credentials_required", "send Authorization: Bearer <API key>")
    return payer


async def _answer(work: Awaitable[BaseModel]) -> CallToolResult:
    """A view as a tool result (structured, and as JSON text), or a refusal as a tool error."""
    try:
        view = await work
    except Refusal as refusal:
        price = refusal.extra.get("price")
        if isinstance(price, StoredQuote):  # shown as prices are shown
            refusal.extra["price"] = price_view(price.dump()).model_dump()
        return _error(problem_of(refusal))
    except Problem as problem:
        return _error(problem)
    data = view.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data))], structured_content=data
    )


def _error(problem: Problem) -> CallToolResult:
    """The problem the REST API would answer, as a tool error (``retry_after`` in seconds
    where its answer would say ``Retry-After``)."""
    body: dict[str, Any] = {**problem.body(), "kind": problem.kind}
    if "Retry-After" in problem.headers:
        body["retry_after"] = int(problem.headers["Retry-After"])
    body = json.loads(json.dumps(body, default=str))
    return CallToolResult(
        content=[TextContent(type="text", text=f"{problem.kind}: {problem.detail}")],
        structured_content=body,
        is_error=True,
    )
