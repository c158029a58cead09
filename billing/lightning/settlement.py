"""From hints to confirmed settlements.

Pushes (LNbits websocket or webhook, LND subscription) are hints: LNbits lets anyone post to a
wallet's websocket, and webhooks are unsigned. Each hint is confirmed with the backend's
authenticated status call, and after every (re)connect all open invoices are re-checked, because
pushes sent while disconnected are lost. Only confirmed settlements come out of here; callers
still apply each one idempotently (the same invoice may be confirmed more than once).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from . import InvoiceStatus, LightningBackend, LightningError

log = logging.getLogger(__name__)

OpenHashes = Callable[[], Awaitable[Iterable[str]]]


async def confirmed_settlements(
    backend: LightningBackend,
    open_hashes: OpenHashes,
    *,
    on_hint: Callable[[str | None], None] | None = None,
) -> AsyncIterator[InvoiceStatus]:
    """Settled invoices, each confirmed by ``backend.invoice_status``."""
    async for hint in backend.hints():
        if on_hint is not None:
            on_hint(hint)
        hashes = list(await open_hashes()) if hint is None else [hint]
        for payment_hash in hashes:
            try:
                status = await backend.invoice_status(payment_hash)
            except LightningError as exc:
                log.warning("cannot confirm %s: %s", payment_hash[:16], exc)
                continue
            if status.settled:
                yield status
