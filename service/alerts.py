"""The alert worker: reads the thresholds' values now and then and, for each new crossing,
logs a line and POSTs a signed webhook (the same signature scheme as task callbacks)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp

from billing import alerts
from billing.runway import runway
from billing.store import Store

from .balance import BalanceWatcher
from .books import BooksWatcher
from .tasks.callbacks import post_signed

log = logging.getLogger(__name__)


class AlertWorker:
    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        limits: alerts.Thresholds,
        *,
        balance: BalanceWatcher | None,
        books: BooksWatcher | None = None,
        webhook_url: str | None,
        secret: str | None,
        interval: float = 30.0,
    ) -> None:
        self._store = store
        self._session = session
        self._limits = limits
        self._balance = balance
        self._books = books
        self._url = webhook_url
        self._secret = secret or ""
        self._interval = interval
        self._timeout = aiohttp.ClientTimeout(total=5)

    async def check(self, now: float | None = None) -> list[alerts.Reading]:
        """One round: the alerts that fired now (each also logged and sent)."""
        balance = self._balance.latest if self._balance is not None else None
        left = await runway(self._store, balance.usd, now=now) if balance is not None else None
        current = await alerts.readings(self._store, self._limits, left, now)
        if self._books is not None:
            current += alerts.books(self._books.latest)
        async with self._store.transaction() as tx:
            fired = await alerts.new_crossings(tx, current)
        for reading in fired:
            log.warning("ALERT %s: %s", reading.key, reading.message)
            if self._url:
                body = json.dumps(
                    {"alert": reading.key, "message": reading.message, "at": time.time()}
                ).encode()
                await post_signed(
                    self._session,
                    self._url,
                    self._secret,
                    body,
                    {"X-Satrouter-Event": "alert"},
                    self._timeout,
                )
        return fired

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("alert check failed")
            await asyncio.sleep(self._interval)
