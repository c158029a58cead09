"""One aiohttp request answered by an ASGI application (ASGI 3, HTTP only).

The body is read by aiohttp first (``request.read()``, so the application's
``client_max_size`` refuses an oversized one with 413 before the ASGI side runs) and handed over
whole in one ``http.request`` message; after it, ``receive`` waits until the answer is complete
and then reports ``http.disconnect``. The answer streams back as it is sent: a body that comes in
one message is sent whole with its ``Content-Length`` when the handler returns, a longer one
chunked as it comes (an event stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from aiohttp import web

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def scope_of(request: web.Request, extra: Mapping[str, Any] | None = None) -> Scope:
    """The ASGI ``http`` scope of an aiohttp request (with ``extra`` keys for the application)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    host = request.url.host or ""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
        "query_string": request.rel_url.raw_query_string.encode("latin-1"),  # as sent
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else None,
        "server": (host, request.url.port),
        "state": {},
        **(extra or {}),
    }


async def serve(
    request: web.Request, app: ASGIApp, *, extra: Mapping[str, Any] | None = None
) -> web.StreamResponse:
    """Answer ``request`` with ``app``; ``extra`` goes into its scope."""
    body = await request.read()
    answered = asyncio.Event()
    sent_body = False
    response: web.StreamResponse | None = None
    started: Message | None = None

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response, started
        kind = message["type"]
        if kind == "http.response.start":
            if started is not None:
                raise RuntimeError("http.response.start sent twice")
            started = message
            return
        if kind != "http.response.body":
            return  # nothing else applies to one HTTP answer (trailers, pushes)
        if started is None:
            raise RuntimeError("http.response.body before http.response.start")
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if response is None and not more:  # the whole answer at once: sent as one piece
            response = _response(started, chunk)
            answered.set()
            return
        if response is None:
            response = _response(started)
            await response.prepare(request)
        if chunk:
            await response.write(chunk)
        if not more:
            await response.write_eof()
            answered.set()

    try:
        await app(scope_of(request, extra), receive, send)
    finally:
        answered.set()
    if response is None:
        if started is None:
            raise RuntimeError("the ASGI application sent no answer")
        response = _response(started, b"")  # a start with no body message: an empty answer
    return response


def _response(start: Message, body: bytes | None = None) -> web.StreamResponse:
    """The answer ``start`` begins: with ``body``, whole (aiohttp sends it after the handler
    returns, with its length, in one write); without, to be streamed."""
    response = (
        web.Response(status=int(start["status"]), body=body)
        if body is not None
        else web.StreamResponse(status=int(start["status"]))
    )
    for name, value in start.get("headers", ()):
        key = bytes(name).decode("latin-1")
        if key.lower() in ("content-length", "transfer-encoding"):
            continue  # aiohttp frames the body itself
        response.headers.add(key, bytes(value).decode("latin-1"))
    return response
