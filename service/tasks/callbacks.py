"""Signed webhooks to a task's ``callback_url``: one POST per state change once it is paid.

The body is JSON ``{"event_id", "type", "task": <task view>}``, signed two ways with the secret
the agent received when it created the task:

- Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``),
  so agents verify with off-the-shelf code (the ``standardwebhooks`` packages);
- ``X-Satrouter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``, the
  earlier scheme, kept for one release.

Delivery: the outbox's events with ``notify`` are copied into the ``deliveries`` table (the
cursor advances in the same transaction), queued by destination (scheme, host, port). Each
destination is sent to by one worker at a time, in event order, with retries and backoff; up to
``max_concurrent`` requests in flight at once (a slot is held only while sending, never across
a backoff). So a dead or slow destination delays only itself, a
destination with more than ``max_queue`` pending deliveries has new ones given up (not held in
memory), and a restart re-sends whatever was not confirmed (at least once: ``event_id`` and
``webhook-id`` let the agent drop duplicates). Redirects are not followed, and every connection
goes to public addresses only (:mod:`.destinations`) unless private ones are allowed.
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
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from billing.store import DeliveryRow, EventRow, Store

from . import destinations
from .record import CallbackTarget

log = logging.getLogger(__name__)
CONSUMER = "callbacks"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300) -> bool:
    """What an agent does with ``X-Satrouter-Signature`` (used by the tests and the demo)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def signed_headers(secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """Both signatures of ``body``, at the current time."""
    now = int(time.time())
    standard = Webhook(secret).sign(message_id, datetime.fromtimestamp(now, UTC), body.decode())
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(now),
        "webhook-signature": standard,
        "X-Satrouter-Signature": sign(secret, body, now),
    }


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    body: bytes,
    headers: dict[str, str],
    per_attempt: aiohttp.ClientTimeout,
) -> bool:
    """POST ``body`` with ``X-Satrouter-Signature``, retrying with backoff; True once it got a
    2xx. For the operator's own alert webhook."""
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        await asyncio.sleep(delay)
        signed = {
            **headers,
            "Content-Type": "application/json",
            "X-Satrouter-Signature": sign(secret, body, int(time.time())),
        }
        try:
            async with session.post(
                url, data=body, headers=signed, timeout=per_attempt, allow_redirects=False
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
        allow_private: bool = False,
        timeout: float = 5.0,
        max_concurrent: int = 32,
        max_queue: int = 1000,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        poll: float = 1.0,
    ) -> None:
        self._store = store
        self._session = session  # its resolver returns public addresses only
        self._view = view
        self._allow_private = allow_private
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_concurrent = max_concurrent
        self._max_queue = max_queue
        self._delays = retry_delays
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Moves on every replica set it (states.Hub); the poll is the safety net behind that.
        self.wake = asyncio.Event()
        self._poll = poll

    async def run(self) -> None:
        try:
            while True:
                self.wake.clear()
                await self._enqueue()
                await self._dispatch()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._poll)
        finally:
            for worker in self._workers.values():
                worker.cancel()

    async def _enqueue(self) -> None:
        """Copy new events to notify about into per-destination deliveries."""
        while True:
            async with self._store.read() as tx:
                events = await tx.events_after(await tx.cursor(CONSUMER), limit=200)
                tasks = {e.key: await tx.task(e.key) for e in events if e.payload.get("notify")}
            if not events:
                return
            async with self._store.transaction() as tx:
                now = time.time()
                for event in events:
                    task = tasks.get(event.key) if event.payload.get("notify") else None
                    url = CallbackTarget.of(task).url if task is not None else None
                    if url:
                        await self._queue(tx, event, str(url), now)
                await tx.set_cursor(CONSUMER, events[-1].id)

    async def _queue(self, tx: Any, event: EventRow, url: str, now: float) -> None:
        where = destinations.destination(url)
        state = "pending"
        if await tx.count_pending_deliveries(where) >= self._max_queue:
            log.warning("callbacks to %s: queue full; giving up event %d", where, event.id)
            state = "failed"
        await tx.insert_delivery(event.id, event.key, where, state, now)

    async def _dispatch(self) -> None:
        """A worker for every destination with deliveries and none yet."""
        async with self._store.read() as tx:
            waiting = await tx.pending_destinations(limit=4 * self._max_concurrent)
        for where in waiting:
            if len(self._workers) >= 4 * self._max_concurrent:
                return  # the rest get a worker as these finish
            if where not in self._workers:
                self._workers[where] = asyncio.create_task(self._work(where))

    async def _work(self, where: str) -> None:
        try:
            while True:
                async with self._store.read() as tx:
                    batch = await tx.pending_deliveries(where, limit=50)
                if not batch:
                    return
                for delivery in batch:
                    await self._deliver(delivery)
        except Exception:
            log.exception("callbacks to %s stopped", where)
        finally:
            del self._workers[where]
            self.wake.set()  # anything queued meanwhile gets a worker

    async def _deliver(self, delivery: DeliveryRow) -> None:
        async with self._store.read() as tx:
            task = await tx.task(delivery.task_id)
            events = [e for e in await tx.events_for(delivery.task_id) if e.id == delivery.event_id]
        if task is None or not events:
            return await self._finish(delivery, False, 0, "task or event gone")
        target = CallbackTarget.of(task)
        url, secret = str(target.url), str(target.secret)
        if not self._allow_private and destinations.literal_refused(url):
            return await self._finish(delivery, False, 0, "not a public address")
        event = events[0]
        body = json.dumps(
            {"event_id": event.id, "type": event.topic, "task": self._view(task)}, default=str
        ).encode()
        error = ""
        for attempt, delay in enumerate((0.0, *self._delays), start=1):
            await asyncio.sleep(delay)
            headers = {
                **signed_headers(secret, f"msg_{event.id}", body),
                "X-Satrouter-Event": event.topic,
            }
            try:
                # A connection slot only while sending: a destination waiting out its backoff
                # holds none, so failing ones cannot starve the others.
                async with (
                    self._slots,
                    self._session.post(
                        url,
                        data=body,
                        headers=headers,
                        timeout=self._timeout,
                        allow_redirects=False,
                    ) as response,
                ):
                    if response.status < 300:
                        return await self._finish(delivery, True, attempt, None)
                    error = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = type(exc).__name__
            log.info(
                "callback %d to %s attempt %d failed: %s",
                event.id,
                delivery.destination,
                attempt,
                error,
            )
        log.warning("giving up the %s callback for %s", event.topic, event.key)
        await self._finish(delivery, False, len(self._delays) + 1, error)

    async def _finish(
        self, delivery: DeliveryRow, delivered: bool, attempts: int, error: str | None
    ) -> None:
        async with self._store.transaction() as tx:
            await tx.finish_delivery(
                delivery.id, delivered=delivered, attempts=attempts, error=error, now=time.time()
            )
