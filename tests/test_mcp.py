"""satrouter as an MCP server at ``/mcp``, driven by the ``mcp`` SDK's own client
(streamable HTTP) against the running service: the tools answer what the REST API answers,
a chat completion is paid from the key's balance, and nothing is served without a key."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from service.http.keys import STORE

from .conftest import CHEAP, HELLO, Service, offline_service, until
from .test_api_fuzz import HOSTILE_BODIES, _row_counts

TOOLS = {"list_models", "quote", "chat_completion", "create_task", "get_task", "get_balance"}


@contextlib.asynccontextmanager
async def mcp_session(
    url: str, api_key: str | None, statuses: list[int] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session to ``url``/mcp, with the key as its bearer (each
    answer's status is added to ``statuses``)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"response": [record]}) as http,
        streamable_http_client(url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured answer; fails the test on a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def refusal(result: CallToolResult) -> dict[str, Any]:
    """A tool error's problem (kind, detail, status)."""
    assert result.is_error, result.structured_content
    assert result.structured_content is not None
    return result.structured_content


async def test_the_tools_are_listed_and_the_balance_is_read(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        account = (await http.post("/v1/accounts")).json()
        async with mcp_session(str(http.base_url).rstrip("/"), account["api_key"]) as session:
            listed = (await session.list_tools()).tools
            assert {tool.name for tool in listed} == TOOLS
            quote = next(tool for tool in listed if tool.name == "quote")
            assert "messages" in json.dumps(quote.input_schema)  # the request's own schema
            balance = await call(session, "get_balance")
            assert balance["id"] == account["id"]
            assert balance["balance_msat"] == 0
            # The engine's refusal (no catalog offline) is a tool error naming its kind.
            models = refusal(await session.call_tool("list_models", {}))
            assert models["kind"] == "catalog_unavailable"
            assert models["status"] == 503
            assert models["detail"]
            # Arguments are validated from the tool's schema: nothing reaches the engine.
            bad = await session.call_tool("quote", {"request": {"messages": []}})
            assert bad.is_error


async def test_without_a_key_nothing_is_served(tmp_path: Path) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    async with offline_service(tmp_path) as http:
        anonymous = await http.post("/mcp", json=ping, headers=accept)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        assert anonymous.headers["Content-Type"].startswith("application/problem+json")
        assert anonymous.json()["type"].endswith("credentials_required")
        forged = await http.post(
            "/mcp", json=ping, headers={**accept, "Authorization": "Bearer sk-sat-forged"}
        )
        assert forged.status_code == 401
        assert forged.json()["type"].endswith("invalid_credentials")
        base = str(http.base_url).rstrip("/")
        for key in (None, "sk-sat-forged"):
            statuses: list[int] = []
            with pytest.raises(ExceptionGroup) as refused:
                async with mcp_session(base, key, statuses):
                    pass
            assert refused.group_contains(MCPError)
            assert statuses == [401]


async def test_bodies_are_held_to_the_rest_apis_limits(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        account = (await http.post("/v1/accounts")).json()
        headers = {
            "Authorization": f"Bearer {account['api_key']}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        huge = await http.post("/mcp", content=b" " * (1024 * 1024 + 1), headers=headers)
        assert huge.status_code == 413
        text = await http.post(
            "/mcp", content=b"{}", headers={**headers, "Content-Type": "text/plain"}
        )
        assert text.status_code == 415
        assert text.json()["type"].endswith("unsupported_media_type")
        deep = await http.post("/mcp", content=b"[" * 100 + b"]" * 100, headers=headers)
        assert deep.status_code == 400
        assert deep.json()["type"].endswith("json_too_deep")
        listed = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers
        )
        assert listed.status_code == 200, listed.text
        assert {tool["name"] for tool in listed.json()["result"]["tools"]} == TOOLS


async def test_hostile_bodies_are_refused_as_the_rest_api_refuses_them(tmp_path: Path) -> None:
    """The hostile bodies the REST API is tested with: each is refused with the same problem
    before the SDK parses it (or, valid JSON but no JSON-RPC message, by the SDK with a 400
    JSON-RPC error), and nothing is written."""
    async with offline_service(tmp_path) as http:
        account = (await http.post("/v1/accounts")).json()
        headers = {
            "Authorization": f"Bearer {account['api_key']}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        before = _row_counts(tmp_path / "offline.db")
        for body, kind in HOSTILE_BODIES:
            answer = await http.post("/mcp", content=body, headers=headers)
            if kind == "invalid_request":  # JSON, but not a message: the protocol's own error
                assert answer.status_code == 400, body
                assert answer.json()["error"]["code"] in (-32600, -32602), body
            else:
                assert answer.status_code == 400, body
                assert answer.json()["type"] == f"urn:satrouter:problem:{kind}", body
        assert _row_counts(tmp_path / "offline.db") == before


async def test_requests_are_rate_limited_per_key(tmp_path: Path) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with offline_service(tmp_path, limit_writes_per_credential="3/day") as http:
        account = (await http.post("/v1/accounts")).json()
        headers = {
            "Authorization": f"Bearer {account['api_key']}",
            "Accept": "application/json, text/event-stream",
        }
        for _ in range(3):
            assert (await http.post("/mcp", json=ping, headers=headers)).status_code == 200
        limited = await http.post("/mcp", json=ping, headers=headers)
        assert limited.status_code == 429
        assert limited.json()["type"].endswith("rate_limited")
        assert "Retry-After" in limited.headers


@pytest.mark.lnbits
async def test_models_quote_chat_task_and_balance_through_mcp(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = await service.funded_account(http, 500)
        rest_models = (await http.get("/v1/models")).json()
        request = {"model": CHEAP, "messages": HELLO, "max_tokens": 20}
        rest_quote = (await http.post("/v1/quote", json=request)).json()
        async with mcp_session(service.url, account["api_key"]) as session:
            models = await call(session, "list_models")
            assert models["data"] == rest_models["data"]
            cheap = next(m for m in models["data"] if m["id"] == CHEAP)
            assert cheap["prompt_msat_per_mtok"] > 0
            quote = await call(session, "quote", request=request)
            assert quote["total_msat"] == rest_quote["total_msat"] > 0
            assert quote["model"] == CHEAP

            answer = await call(session, "chat_completion", request=request)
            assert answer["completion"]["choices"][0]["message"]["content"]
            assert answer["max_price_msat"] == quote["total_msat"]

            async def settled(task_id: str) -> dict[str, Any] | None:
                task = await call(session, "get_task", task_id=task_id)
                return task if task["status"] == "reconciled" else None

            chat_task = await until(lambda: settled(answer["task_id"]))
            balance = await call(session, "get_balance")
            assert 0 < chat_task["charge_msat"] <= answer["max_price_msat"]
            assert balance["balance_msat"] == 500_000 - chat_task["charge_msat"]

            task_request = {"messages": HELLO, "model": CHEAP}
            created = await call(
                session, "create_task", request=task_request, idempotency_key="mcp-1"
            )
            assert created["task_token"]
            again = await call(
                session, "create_task", request=task_request, idempotency_key="mcp-1"
            )
            assert again["id"] == created["id"]  # one task, paid once
            done = await until(lambda: settled(created["id"]))
            assert done["result"]["choices"][0]["message"]["content"]
            after = await call(session, "get_balance")
            assert after["balance_msat"] == balance["balance_msat"] - done["charge_msat"]
            # The REST API sees the same balance.
            me = (await http.get("/v1/accounts/me", headers=account["auth"])).json()
            assert me["balance_msat"] == after["balance_msat"]

            # Another account's key reads none of this account's tasks.
            other = (await http.post("/v1/accounts")).json()
        async with mcp_session(service.url, other["api_key"]) as stranger:
            hidden = refusal(await stranger.call_tool("get_task", {"task_id": created["id"]}))
            assert hidden["kind"] == "task_not_found"
        # A task token is a bearer here as on the REST API: it reads its own task.
        async with mcp_session(service.url, created["task_token"]) as holder:
            mine = await call(holder, "get_task", task_id=created["id"])
            assert mine["status"] == "reconciled"
    assert (await service.check_ledger()).ok


@pytest.mark.lnbits
async def test_a_refused_payment_is_a_tool_error_and_charges_nothing(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        account = (await http.post("/v1/accounts")).json()  # nothing deposited
        request = {"model": CHEAP, "messages": HELLO, "max_tokens": 20}
        async with mcp_session(service.url, account["api_key"]) as session:
            short = refusal(await session.call_tool("chat_completion", {"request": request}))
            assert short["kind"] == "insufficient_balance"
            assert short["status"] == 402
            assert short["detail"]
            task = refusal(await session.call_tool("create_task", {"request": request}))
            assert task["kind"] == "insufficient_balance"
            capped = {**request, "max_price_msat": 1}
            over = refusal(await session.call_tool("chat_completion", {"request": capped}))
            assert over["kind"] == "over_max_price"
            assert over["status"] == 402
            assert (await call(session, "get_balance"))["balance_msat"] == 0
    async with service.app[STORE].read() as tx:
        assert await tx.tasks_in_states(["pending", "running", "completed"]) == []
    assert (await service.check_ledger()).ok
