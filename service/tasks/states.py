"""A task's states and the one way it moves between them.

``awaiting_payment -> paid -> running -> completed -> reconciled``, with exits ``expired``
(never paid) and ``failed -> refunded``. Every move is :func:`move`: a compare-and-set on the
task's state, written in the caller's transaction with the outbox event it builds (the only
place one is built), so a crash leaves the old state or the new one, never half of each.
After the commit, :class:`Hub` tells whoever cares: the worker for the new state, metrics,
the callback sender and open event streams. Each move also sends a note on the store's
``CHANNEL`` in the same transaction, so every replica's :class:`Hub` hears the moves other
replicas make (:meth:`Hub.follow`) the moment they commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from billing.store import TaskRow, Tx

from .context import Context
from .leases import Lease
from .record import CallbackTarget, record_of
from .refusals import Refusal

log = logging.getLogger(__name__)
#: The store channel every task move is announced on (``Tx.notify``).
CHANNEL = "task_moves"
#: Moves this replica announced whose own note has not come back yet, kept at most.
ECHOES = 4096


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


def note(task_id: str, state: State, callback: bool) -> str:
    """The note of ``task_id`` entering ``state`` (``callback``: its callback_url hears of it):
    a wake-up, small; listeners read the task itself."""
    return json.dumps({"task": task_id, "state": str(state), "callback": callback})


def heard(payload: str) -> tuple[str, State, bool] | None:
    """``(task id, state, callback)`` from a note; None for one that is not a task move (any
    session on the database can send on the channel)."""
    try:
        fields = json.loads(payload)
        return str(fields["task"]), State(fields["state"]), bool(fields["callback"])
    except (ValueError, TypeError, KeyError):
        return None


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
    Entering ``running`` takes ``lease`` on the task; leaving it drops the task's lease, except
    for ``completed``, which keeps it until the task is reconciled (a claim: see workers)."""
    now = time.time()
    data = record_of(task).updated(updates or {}).dump()
    if not await tx.update_task(task.id, state=to, data=data, expected_state=task.state, now=now):
        return None
    await _leased(tx, task.id, to, lease, now, left=task.state)
    payload = event(task.id, to, data, **(event_fields or {}))
    await tx.append_event(f"task.{to}", task.id, payload, now)
    await tx.notify(CHANNEL, note(task.id, to, bool(payload.get("notify"))))
    return TaskRow(task.id, to, task.agent, data, task.created_at, now)


async def _leased(
    tx: Tx, task_id: str, to: str, lease: Lease | None, now: float, left: str | None = None
) -> None:
    if to == State.RUNNING:
        if lease is None:
            raise ValueError("a task enters running only under a lease")
        await tx.take_lease(task_id, lease.owner, lease.until(now))
    elif left == State.RUNNING and to == State.COMPLETED:
        pass  # kept: the replica that ran it reconciles it, and no other claims it meanwhile
    elif left in (State.RUNNING, State.COMPLETED):
        await tx.drop_lease(task_id)


async def insert(tx: Tx, task: TaskRow, *, lease: Lease | None = None) -> TaskRow:
    """A new task in its first state, with its event (and ``lease`` if it starts running);
    the task as stored."""
    stored = replace(task, data=record_of(task).dump())
    await tx.insert_task(stored)
    await _leased(tx, task.id, task.state, lease, task.created_at)
    state = State(task.state)
    payload = event(task.id, state, stored.data)
    await tx.append_event(f"task.{state}", task.id, payload, task.created_at)
    await tx.notify(CHANNEL, note(task.id, state, bool(payload.get("notify"))))
    return stored


class Hub:
    """After commit: who hears of a task's new state, from this replica's moves
    (:meth:`announce`) and, through the store's notes, from every replica's (:meth:`follow`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        #: Hands paid and completed tasks to the workers (set once, by the engine).
        self.work: Callable[[TaskRow], None] = lambda task: None
        # Moves announced here: their notes come back too and are dropped, not told twice.
        self._echoes: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._fetching: set[asyncio.Task[None]] = set()

    def announce(self, task: TaskRow) -> None:
        if task.state in (State.PAID, State.COMPLETED):
            self.work(task)
        if self._ctx.metrics is not None:
            self._ctx.metrics.tasks.labels(task.state).inc()
        if self._ctx.callbacks is not None and CallbackTarget.of(task).url:
            self._ctx.callbacks.wake.set()
        self._tell(task.id, task.state)
        self._echoes[(task.id, task.state)] = None
        while len(self._echoes) > ECHOES:
            self._echoes.popitem(last=False)

    def _tell(self, task_id: str, state: str | None) -> None:
        """Wake the task's event streams (they read its new events from the store)."""
        for queue in self._listeners.get(task_id, ()):
            queue.put_nowait({"status": state, "at": time.time()})

    async def follow(self, retry: float = 1.0) -> None:
        """Hear every replica's moves on the store's channel until cancelled: wake this
        replica's event streams and callback sender, and hand paid tasks to its workers (the
        move to running is a compare-and-set under a lease: one replica wins it). A note
        that may have been missed (``None``) is answered by catching up from the store."""
        while True:
            try:
                async with self._ctx.store.listen(CHANNEL) as notes:
                    async for payload in notes:
                        if payload is None:
                            await self._catch_up()
                        elif (move := heard(payload)) is not None:
                            self._heard(*move)
            except Exception:
                log.exception("following task moves failed; listening again")
            await asyncio.sleep(retry)

    def _heard(self, task_id: str, state: State, callback: bool) -> None:
        if (task_id, state) in self._echoes:
            del self._echoes[(task_id, state)]
            return  # this replica's own move, told already
        self._tell(task_id, state)
        if callback and self._ctx.callbacks is not None:
            self._ctx.callbacks.wake.set()
        if state == State.PAID:  # completed ones are reconciled by the replica that ran them
            fetch = asyncio.get_running_loop().create_task(self._fetch(task_id, state))
            self._fetching.add(fetch)
            fetch.add_done_callback(self._fetching.discard)

    async def _fetch(self, task_id: str, state: State) -> None:
        try:
            async with self._ctx.store.read() as tx:
                task = await tx.task(task_id)
        except Exception:
            log.exception("reading %s after its move failed", task_id)
            return
        if task is not None and task.state == state:
            self.work(task)

    async def _catch_up(self) -> None:
        """After notes may have been lost: every stream re-reads, the callback sender looks
        again, and every paid task goes to the workers."""
        for task_id in list(self._listeners):
            self._tell(task_id, None)
        if self._ctx.callbacks is not None:
            self._ctx.callbacks.wake.set()
        async with self._ctx.store.read() as tx:
            ready = await tx.tasks_in_states([State.PAID])
        for task in ready:
            self.work(task)

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
