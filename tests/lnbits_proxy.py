"""A loopback HTTP proxy in front of the real LNbits that can hold back its *pay* calls.

Everything passes through unchanged except ``POST /api/v1/payments`` with ``"out": true``:

- ``late``: forwarded at once (the payment really goes through), the answer held back
  ``delay`` seconds: a payee holding the payment, or a slow node, as seen from satrouter;
- ``hold``: not forwarded until :meth:`release` (the payment is "in flight" and LNbits has no
  record of it yet), then forwarded even if satrouter hung up or died meanwhile;
- ``drop``: never forwarded; the caller waits until it gives up.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import aiohttp
from aiohttp import web

from service.demo.loopback import serve

Mode = Literal["pass", "late", "hold", "drop"]


class LnbitsProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.url = ""
        self.pays = 0  # pay calls seen
        self.arrived = asyncio.Event()  # a pay call is being held
        self._release = asyncio.Event()
        self._closing = asyncio.Event()
        self._forwards: set[asyncio.Task[tuple[int, bytes]]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> LnbitsProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.url = await serve(app)
        return self

    async def close(self) -> None:
        self._closing.set()
        self._release.set()
        if self._forwards:
            await asyncio.gather(*self._forwards, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def release(self) -> None:
        self._release.set()

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in _KEPT}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as response:
            return response.status, await response.read()

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """The wallet's push socket, passed through both ways."""
        assert self._session is not None
        down = web.WebSocketResponse()
        await down.prepare(request)
        url = self.upstream.replace("http", "ws", 1) + request.path_qs
        async with self._session.ws_connect(url) as up:

            async def pump(source: Any, sink: Any) -> None:
                async for message in source:
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        break
                    await sink.send_str(message.data)

            jobs = [asyncio.ensure_future(pump(up, down)), asyncio.ensure_future(pump(down, up))]
            await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            for job in jobs:
                job.cancel()
        await down.close()
        return down

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        body = await request.read()
        paying = request.method == "POST" and request.path == "/api/v1/payments" and _out(body)
        if paying:
            self.pays += 1
        mode = self.mode if paying else "pass"
        if mode == "drop":
            self.arrived.set()
            await self._closing.wait()  # the caller hangs up first
            raise web.HTTPBadGateway()
        if mode == "hold":
            self.arrived.set()
            await self._release.wait()
        # Forwarded in a task of its own: it goes through even if the caller is gone.
        forward = asyncio.ensure_future(self._forward(request, body))
        self._forwards.add(forward)
        forward.add_done_callback(self._forwards.discard)
        status, content = await asyncio.shield(forward)
        if mode == "late":
            await asyncio.sleep(self.delay)
        return web.Response(status=status, body=content, content_type="application/json")


_KEPT = ("x-api-key", "content-type", "authorization")


def _out(body: bytes) -> bool:
    try:
        return json.loads(body or b"{}").get("out") is True
    except (ValueError, AttributeError):
        return False
