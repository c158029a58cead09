"""Every response forbids framing, sniffing and referrers and names no versions; the dashboard's
CSP allows nothing inline (its script and style are files served by satrouter)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from .conftest import offline_service

COMMON = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Server": "satrouter",
}


def _directives(csp: str) -> dict[str, list[str]]:
    parts = (d.split() for d in csp.split(";") if d.strip())
    return {p[0]: p[1:] for p in parts}


async def _raw(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_headers_on_the_dashboard_the_admin_api_and_errors(tmp_path: Path) -> None:
    async with offline_service(tmp_path, admin_token="admin-secret-for-tests") as http:
        page = await http.get("/admin/")
        answers = {
            "page": page,
            "script": await http.get("/admin/dashboard.js"),
            "style": await http.get("/admin/dashboard.css"),
            "admin": await http.get(
                "/admin/topups", headers={"Authorization": "Bearer admin-secret-for-tests"}
            ),
            "refused": await http.get("/admin/status"),
            "missing": await http.get("/nowhere"),
            "health": await http.get("/healthz"),
        }
        unparseable = await _raw(str(http.base_url), b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answers["script"].status_code == answers["style"].status_code == 200
    assert answers["script"].headers["Content-Type"].startswith("text/javascript")
    assert answers["style"].headers["Content-Type"].startswith("text/css")
    for name, answer in answers.items():
        for header, value in COMMON.items():
            assert answer.headers.get(header) == value, (name, header)
        csp = _directives(answer.headers["Content-Security-Policy"])
        assert csp["frame-ancestors"] == ["'none'"], name
        assert not any("'unsafe-" in s for v in csp.values() for s in v), name
    dashboard = _directives(page.headers["Content-Security-Policy"])
    assert dashboard["script-src"] == ["'self'"]
    assert dashboard["style-src"] == ["'self'"]
    # Nothing inline is left in the page for the CSP to block.
    assert "<script>" not in page.text
    assert "<style>" not in page.text
    assert " style=" not in page.text
    assert '<script src="/admin/dashboard.js"></script>' in page.text
    head = unparseable.split(b"\r\n\r\n")[0].lower()
    assert b"aiohttp" not in head
    assert b"python" not in head
