"""How long the OpenRouter credits last at the recent rate of spend."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from .ledger import LLM_COST
from .money import NanoUsd
from .store import Store


@dataclass(frozen=True, slots=True)
class Runway:
    balance: NanoUsd
    spend_per_hour: NanoUsd  # averaged over the window
    window_hours: Decimal
    at: float

    @property
    def hours(self) -> Decimal | None:
        """Hours left at the recent rate; None when nothing is being spent."""
        if self.spend_per_hour.value <= 0:
            return None
        return (Decimal(self.balance.value) / Decimal(self.spend_per_hour.value)).quantize(
            Decimal("0.1")
        )


async def runway(
    store: Store, balance: NanoUsd, *, window_hours: int = 24, now: float | None = None
) -> Runway:
    """The runway of ``balance`` at the LLM spend recorded in the last ``window_hours``."""
    now = time.time() if now is None else now
    async with store.read() as tx:
        spent = await tx.account_flow(LLM_COST.code, now - window_hours * 3600)
    per_hour = NanoUsd(-(-spent // window_hours))  # rounded up: the runway errs short
    return Runway(balance, per_hour, Decimal(window_hours), now)
