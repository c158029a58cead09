"""The ASGI bridge (service/http/asgi.py): small ASGI applications answered through aiohttp on
a real loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from aiohttp import web

from service.demo.loopback import serve
from service.http import asgi
from service.http.problems import problem_middleware


async def echo(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
    """Answers what it was given: its scope (less the bytes) and the body it received."""
    message = await receive()
    shown = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string")}
    shown["headers"] = {k.decode(): v.decode() for k, v in scope["headers"]}
    shown["query_string"] = scope["query_string"].decode()
    shown["body"] = message["body"].decode()
    shown["more_body"] = message["more_body"]
    data = json.dumps(shown, default=list).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"999"),  # wrong on purpose: the bridge frames the body
                (b"x-twice", b"a"),
                (b"x-twice", b"b"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def chunks(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
    """An event stream in three pieces, then waits for the disconnect that follows it."""
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/x")]}
    )
    for piece in (b"one ", b"two ", b"three"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    assert (await asyncio.wait_for(receive(), 5))["type"] == "http.disconnect"


async def broken(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
    raise ValueError("the application failed before answering")


async def silent(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})


@contextlib.asynccontextmanager
async def bridged(app: asgi.ASGIApp, **extra: Any) -> AsyncIterator[httpx.AsyncClient]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await asgi.serve(request, app, extra=extra)

    aio = web.Application(middlewares=[problem_middleware], client_max_size=1024)
    aio.router.add_route("*", "/bridge", handler)
    runner, url = await serve(aio)
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            yield http
    finally:
        await runner.cleanup()


async def test_the_scope_body_and_answer_cross_the_bridge() -> None:
    async with bridged(echo, **{"app.key": "value"}) as http:
        answer = await http.post(
            "/bridge?x=1&y=%20", content=b'{"hello": 1}', headers={"X-Custom": "yes"}
        )
    assert answer.status_code == 201
    assert answer.headers["content-length"] == str(len(answer.content))
    assert answer.headers.get_list("x-twice") == ["a", "b"]
    seen = answer.json()
    assert seen["type"] == "http"
    assert seen["method"] == "POST"
    assert seen["path"] == "/bridge"
    assert seen["query_string"] == "x=1&y=%20"
    assert seen["headers"]["x-custom"] == "yes"
    assert seen["client"][0] == "127.0.0.1"
    assert seen["body"] == '{"hello": 1}'
    assert seen["more_body"] is False
    assert seen["app.key"] == "value"


async def test_a_streamed_answer_is_sent_as_it_comes() -> None:
    async with bridged(chunks) as http:
        answer = await http.get("/bridge")
    assert answer.status_code == 200
    assert answer.headers["transfer-encoding"] == "chunked"
    assert answer.text == "one two three"


async def test_limits_and_failures_are_problems() -> None:
    async with bridged(echo) as http:
        large = await http.post("/bridge", content=b"x" * 2048)
        assert large.status_code == 413  # aiohttp's client_max_size, before the application
        assert large.headers["content-type"].startswith("application/problem+json")
    async with bridged(broken) as http:
        failed = await http.get("/bridge")
        assert failed.status_code == 500
        assert "the application failed" not in failed.text  # no internals shown
    async with bridged(silent) as http:
        empty = await http.get("/bridge")
        assert empty.status_code == 204
        assert empty.content == b""
