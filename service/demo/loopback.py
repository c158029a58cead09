"""Serving an aiohttp app on a free loopback port (the demo, tests and benchmarks do this)."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, **runner_options: object) -> tuple[web.AppRunner, str]:
    """Start ``app`` on 127.0.0.1 and a free port: the runner (to clean up) and its URL."""
    runner = web.AppRunner(app, **runner_options)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
