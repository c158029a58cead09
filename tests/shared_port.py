"""A tiny app served by ``serve --workers``' own helpers: ``python -m tests.shared_port PORT N``.

Each worker answers ``GET /`` with its process id, so a test can see that several processes
answer on one port.
"""

from __future__ import annotations

import os
import sys

from aiohttp import web

from service.workers import run_worker, supervise


async def _whoami(request: web.Request) -> web.Response:
    return web.Response(text=str(os.getpid()), headers={"Connection": "close"})


def pid_worker(index: int, port: int) -> None:
    app = web.Application()
    app.router.add_get("/", _whoami)
    run_worker(app, "127.0.0.1", port)


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[2]), pid_worker, int(sys.argv[1])))
