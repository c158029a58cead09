"""Headers every response carries: no framing, no referrer, no MIME sniffing, a Content
Security Policy, and a ``Server`` header that names no versions.

API answers get a CSP that allows nothing (they are JSON, never rendered); the dashboard sets
its own, which allows its script and style from satrouter itself and nothing inline.
"""

from __future__ import annotations

from aiohttp import web, web_response

#: What ``Server`` says (aiohttp's default names the Python and aiohttp versions).
SERVER = "satrouter"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: runs for every response, streams and errors included."""
    headers = response.headers
    headers["Server"] = SERVER
    headers.setdefault("Content-Security-Policy", API_CSP)
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"


def hide_versions() -> None:
    """Make aiohttp's own answers (400 to a request it cannot parse, which no app hook sees)
    say :data:`SERVER` too: aiohttp fills ``Server`` from this module global when unset."""
    web_response.SERVER_SOFTWARE = SERVER  # type: ignore[attr-defined]
