"""Signed webhooks to a task's ``callback_url``: one POST per state change, in order.

The body is JSON ``{"event_id", "type", "task": <task view>}``. The signature header is
``X-Satrouter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` with the
secret the agent received when it created the task; agents should also reject old ``t`` values.
Delivery is at least once: the outbox cursor advances only after an event was delivered (2xx)
or its retries ran out, so a restart re-sends what was in flight (``event_id`` lets the agent
drop duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from billing.store import EventRow, Store

log = logging.getLogger(__name__)
CONSUMER = "callbacks"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300) -> bool:
    """What an agent does with a callback (used by the tests and documented for agents)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    body: bytes,
    headers: dict[str, str],
    per_attempt: aiohttp.ClientTimeout,
) -> bool:
    """POST ``body`` signed with ``secret``, retrying with backoff; True once it got a 2xx."""
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        await asyncio.sleep(delay)
        signed = {
            **headers,
            "Content-Type": "application/json",
            "X-Satrouter-Signature": sign(secret, body, int(time.time())),
        }
        try:
            async with session.post(
                url, data=body, headers=signed, timeout=per_attempt
            ) as response:
                if response.status < 300:
                    return True
                reason = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
        log.info("POST to %s attempt %d failed: %s", url.split("?")[0], attempt + 1, reason)
    return False


class CallbackSender:
    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        view: Callable[[Any], dict[str, Any]],
        *,
        timeout: float = 5.0,
    ) -> None:
        self._store = store
        self._session = session
        self._view = view
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            async with self._store.read() as tx:
                position = await tx.cursor(CONSUMER)
                events = await tx.events_after(position, limit=100)
            for event in events:
                if event.payload.get("notify"):
                    await self._deliver(event)
                    async with self._store.transaction() as tx:
                        await tx.set_cursor(CONSUMER, event.id)
            if events and not events[-1].payload.get("notify"):
                async with self._store.transaction() as tx:
                    await tx.set_cursor(CONSUMER, events[-1].id)
            if not events:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1.0)

    async def _deliver(self, event: EventRow) -> None:
        async with self._store.read() as tx:
            task = await tx.task(event.key)
        if task is None or not task.data.get("callback_url"):
            return
        body = json.dumps(
            {"event_id": event.id, "type": event.topic, "task": self._view(task)}, default=str
        ).encode()
        url, secret = task.data["callback_url"], task.data["callback_secret"]
        if not await post_signed(
            self._session, url, secret, body, {"X-Satrouter-Event": event.topic}, self._timeout
        ):
            log.warning("giving up the %s callback for %s", event.topic, event.key)
