"""A request id for every request: the client's ``X-Request-Id`` when it is sane (up to 128
letters, digits and ``-_.:``), else a new one. It is in the context while the request is
handled (so every log line names it), is sent back as ``X-Request-Id``, and the request ends
with one log line (method, route, status, duration, and the task and payer where known) and
its request metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import logs
from ..metrics import METRICS

log = logging.getLogger("satrouter.access")
HEADER = "X-Request-Id"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _incoming(request: web.Request) -> str:
    given = request.headers.get(HEADER, "")
    return given if _SANE.match(given) else uuid.uuid4().hex


@web.middleware
async def request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Each request runs in its own asyncio task, hence its own copy of the context.
    logs.request_id.set(_incoming(request))
    logs.task_id.set(None)
    logs.payer_id.set(None)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        seconds = time.perf_counter() - started
        if (metrics := request.app.get(METRICS)) is not None:
            metrics.observe_request(route, request.method, status, seconds)
        log.info(
            "%s %s %s",
            request.method,
            route,
            status,
            extra={
                "method": request.method,
                "route": route if resource is not None else None,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: streams are prepared inside the handler, so the header
    is set here rather than by the middleware."""
    current = logs.request_id.get()
    if current is not None:
        response.headers[HEADER] = current
