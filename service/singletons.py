"""Work that must run on one replica at a time (the top-up controller, the callback sender):
each replica tries to hold the store's singleton for it; the holder runs the work, the others
try again later and take over when the holder dies (its PostgreSQL session, and with it the
lock, goes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from billing.store import Store

log = logging.getLogger(__name__)


async def run_alone(
    store: Store, name: str, work: Callable[[], Awaitable[None]], retry: float = 5.0
) -> None:
    """Run ``work`` while this replica holds ``name``; otherwise look again every ``retry``."""
    while True:
        try:
            async with store.singleton(name) as held:
                if held:
                    log.info("running %s on this replica", name)
                    await work()
        except Exception:
            log.exception("running %s alone failed", name)
        await asyncio.sleep(retry)
