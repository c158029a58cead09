"""Circuit breakers, one per model.

A model that keeps failing with errors that say it is unwell (429, 5xx, timeouts) is taken out
of rotation for a cool-down, longer when OpenRouter's ``Retry-After`` says so, doubling each time
it fails again. After the cool-down one request probes it (half-open): success closes the
breaker, failure opens it again.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    cooldown: float = 0.0
    probing: bool = False


class Breakers:
    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown: float = 5.0,
        max_cooldown: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._base = cooldown
        self._max = max_cooldown
        self._clock = clock
        self._models: dict[str, _Breaker] = {}

    def state(self, model: str) -> BreakerState:
        breaker = self._models.get(model)
        if breaker is None or breaker.open_until == 0.0:
            return BreakerState.CLOSED
        return BreakerState.OPEN if self._clock() < breaker.open_until else BreakerState.HALF_OPEN

    def allow(self, model: str) -> bool:
        """May a request go to ``model`` now? In half-open, only one probe at a time."""
        state = self.state(model)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        breaker = self._models[model]
        if breaker.probing:
            return False
        breaker.probing = True
        return True

    def succeeded(self, model: str) -> None:
        self._models.pop(model, None)

    def failed(self, model: str, *, retry_after: float | None = None) -> None:
        breaker = self._models.setdefault(model, _Breaker())
        breaker.failures += 1
        breaker.probing = False
        reopening = breaker.open_until != 0.0
        if breaker.failures < self._threshold and not reopening and retry_after is None:
            return
        breaker.cooldown = min(self._max, breaker.cooldown * 2 if reopening else self._base)
        wait = max(breaker.cooldown, retry_after or 0.0)
        breaker.open_until = self._clock() + wait

    def soonest(self, models: list[str]) -> str:
        """Of ``models``, the one whose cool-down ends first (to probe when all are out)."""
        return min(models, key=lambda m: self._models[m].open_until if m in self._models else 0)

    def states(self) -> dict[str, BreakerState]:
        return {model: self.state(model) for model in self._models}
