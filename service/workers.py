"""Several processes serving one port: ``satrouter serve --workers N``.

Each worker is a full replica in its own interpreter (started with ``spawn``, so it shares no
event loop, gRPC channel or database connection with its parent) and opens its own listening
socket on the same address with ``SO_REUSEPORT``: the kernel spreads new connections across
them, and a worker that stops takes only its own connections with it. The parent only
supervises: SIGTERM or SIGINT is passed on to every worker (aiohttp then finishes the requests in
flight), and a worker that ends by itself stops the others, so that the process manager
(systemd, compose, Kubernetes) restarts the whole set rather than leave it short of a worker.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

from aiohttp import web

# How long workers get to finish after SIGTERM before they are killed (aiohttp's own graceful
# shutdown waits up to 60 s for handlers).
STOP_GRACE = 75.0


def run_worker(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` beside the other workers (``SO_REUSEPORT``)."""
    # Each request gets one line from service.http.request_ids (with its id), not aiohttp's.
    web.run_app(app, host=host, port=port, reuse_port=True, print=None, access_log=None)


def supervise(workers: int, target: Callable[..., object], *args: Any) -> int:
    """Run ``target(index, *args)`` in ``workers`` processes until they end; the exit status.

    0 when the workers were asked to stop (SIGTERM, SIGINT) and did; otherwise the status of the
    first worker that ended by itself (1 if it ended with 0 or by a signal).
    """
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=target, args=(index, *args), name=f"satrouter-worker-{index}")
        for index in range(workers)
    ]
    status: int | None = None  # set once stopping: what this command will exit with

    def stop_all() -> None:
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal status
        if status is None:
            status = 0
        stop_all()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        running: dict[Any, multiprocessing.process.BaseProcess] = {}  # by sentinel
        for proc in procs:
            if status is not None:  # told to stop while starting
                break
            proc.start()
            running[proc.sentinel] = proc
        while running:
            ready = wait(list(running), timeout=None if status is None else STOP_GRACE)
            if not ready:  # stopping, and the grace period is over
                for late in running.values():
                    late.kill()
                continue
            for sentinel in ready:
                ended = running.pop(sentinel)
                ended.join()
                if status is None:
                    code = ended.exitcode or 0
                    status = code if code > 0 else 1
                    stop_all()
        return status or 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
