"""Watching the OpenRouter balance: ``/credits`` with a management key, else the key's own
limit from ``/key``. The latest reading feeds the runway, alerts and the balance gauge."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from billing.money import NanoUsd, Rounding

from .metrics import Metrics
from .upstream.errors import UpstreamError
from .upstream.openrouter import OpenRouterClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Balance:
    usd: NanoUsd
    source: str  # "credits" or "key limit"
    at: float


class BalanceWatcher:
    def __init__(
        self,
        upstream: OpenRouterClient,
        *,
        has_management_key: bool,
        metrics: Metrics | None = None,
        interval: float = 60.0,
    ) -> None:
        self._upstream = upstream
        self._management = has_management_key
        self._metrics = metrics
        self._interval = interval
        self.latest: Balance | None = None
        self.error: str | None = None

    async def read(self) -> Balance | None:
        try:
            if self._management:
                credits = await self._upstream.credits()
                balance = Balance(
                    NanoUsd.from_usd(credits.balance, Rounding.DOWN), "credits", time.time()
                )
            else:
                key = await self._upstream.key()
                if key.limit_remaining is None:
                    self.error = "no management key and the API key has no limit: balance unknown"
                    return None
                balance = Balance(
                    NanoUsd.from_usd(key.limit_remaining, Rounding.DOWN), "key limit", time.time()
                )
        except UpstreamError as exc:
            self.error = f"{type(exc).__name__}: {exc.message}"
            log.warning("OpenRouter balance unavailable: %s", self.error)
            return None
        self.latest, self.error = balance, None
        if self._metrics is not None:
            self._metrics.openrouter_balance.set(float(balance.usd.to_usd()))
        return balance

    async def run(self) -> None:
        while True:
            await self.read()
            await asyncio.sleep(self._interval)
