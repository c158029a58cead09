"""Server-sent event streams: the task and operator event feeds and streamed completions.

A client may leave at any time; writing to its closed connection raises
``ConnectionResetError``. Handlers catch it around their loop and return the response, which
aiohttp then closes quietly: a departed reader is not a server error.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def open_stream(
    request: web.Request, headers: Mapping[str, str] | None = None
) -> web.StreamResponse:
    """Send the headers of an event stream and return it, ready for events."""
    response = web.StreamResponse(headers={**(headers or {}), **HEADERS})
    await response.prepare(request)
    return response


async def send(
    response: web.StreamResponse,
    data: str,
    *,
    event_id: int | None = None,
    event: str | None = None,
) -> None:
    """One event; ``data`` is a single line (JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    if event is not None:
        head += f"event: {event}\n"
    await response.write(f"{head}data: {data}\n\n".encode())


async def keep_alive(response: web.StreamResponse) -> None:
    """A comment line: keeps proxies from closing an idle stream."""
    await response.write(b": keep-alive\n\n")
