"""A task's states and the one way it moves between them.

``awaiting_payment -> paid -> running -> completed -> reconciled``, with exits ``expired``
(never paid) and ``failed -> refunded``. Every move is :func:`move`: a compare-and-set on the
task's state, written in the caller's transaction with the outbox event it builds (the only
place one is built), so a crash leaves the old state or the new one, never half of each.
After the commit, :class:`Hub` tells whoever cares: the worker for the new state, metrics,
the callback sender and open event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from billing.store import TaskRow, Tx

from .context import Context
from .leases import Lease
from .record import CallbackTarget, record_of
from .refusals import Refusal


class State(enum.StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    RUNNING = "running"
    COMPLETED = "completed"
    RECONCILED = "reconciled"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


TERMINAL = frozenset({State.RECONCILED, State.EXPIRED, State.REFUNDED})
#: States of a task nobody paid for: its callback_url hears nothing of them.
UNPAID = frozenset({State.AWAITING_PAYMENT, State.EXPIRED})


def event(task_id: str, state: State, data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The outbox event of ``task_id`` entering ``state`` (``data``: the task's record)."""
    payload = {"task": task_id, "status": str(state), **fields}
    if data.get("callback_url") and state not in UNPAID:
        payload["notify"] = True  # the callback sender reads only these
    return payload


async def move(
    tx: Tx,
    task: TaskRow,
    to: State,
    *,
    updates: dict[str, Any] | None = None,
    event_fields: dict[str, Any] | None = None,
    lease: Lease | None = None,
) -> TaskRow | None:
    """Compare-and-set ``task`` from its state to ``to``; None if someone moved it first.
    Entering ``running`` takes ``lease`` on the task; leaving it drops the task's lease."""
    now = time.time()
    data = record_of(task).updated(updates or {}).dump()
    if not await tx.update_task(task.id, state=to, data=data, expected_state=task.state, now=now):
        return None
    await _leased(tx, task.id, to, lease, now, left=task.state)
    await tx.append_event(
        f"task.{to}", task.id, event(task.id, to, data, **(event_fields or {})), now
    )
    return TaskRow(task.id, to, task.agent, data, task.created_at, now)


async def _leased(
    tx: Tx, task_id: str, to: str, lease: Lease | None, now: float, left: str | None = None
) -> None:
    if to == State.RUNNING:
        if lease is None:
            raise ValueError("a task enters running only under a lease")
        await tx.take_lease(task_id, lease.owner, lease.until(now))
    elif left == State.RUNNING:
        await tx.drop_lease(task_id)


async def insert(tx: Tx, task: TaskRow, *, lease: Lease | None = None) -> TaskRow:
    """A new task in its first state, with its event (and ``lease`` if it starts running);
    the task as stored."""
    stored = replace(task, data=record_of(task).dump())
    await tx.insert_task(stored)
    await _leased(tx, task.id, task.state, lease, task.created_at)
    state = State(task.state)
    await tx.append_event(
        f"task.{state}", task.id, event(task.id, state, stored.data), task.created_at
    )
    return stored


class Hub:
    """After commit: who hears of a task's new state."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        #: Hands paid and completed tasks to the workers (set once, by the engine).
        self.work: Callable[[TaskRow], None] = lambda task: None

    def announce(self, task: TaskRow) -> None:
        if task.state in (State.PAID, State.COMPLETED):
            self.work(task)
        if self._ctx.metrics is not None:
            self._ctx.metrics.tasks.labels(task.state).inc()
        if self._ctx.callbacks is not None and CallbackTarget.of(task).url:
            self._ctx.callbacks.wake.set()
        for queue in self._listeners.get(task.id, ()):
            queue.put_nowait({"status": task.state, "at": task.updated_at})

    @contextlib.contextmanager
    def listen(self, task_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of the task's state changes while the block runs; refused past the bounds
        on listeners per task and in all (each holds a connection and a queue)."""
        config = self._ctx.config
        listening = self._listeners.get(task_id, set())
        total = sum(len(q) for q in self._listeners.values())
        if len(listening) >= config.max_listeners_per_task or total >= config.max_listeners:
            raise Refusal(
                "too_many_listeners",
                f"at most {config.max_listeners_per_task} event streams per task and "
                f"{config.max_listeners} in all are open at once; close one first",
                retry_after=5,
            )
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.setdefault(task_id, set()).add(queue)
        try:
            yield queue
        finally:
            self._listeners[task_id].discard(queue)
            if not self._listeners[task_id]:
                del self._listeners[task_id]
