"""The engine's background work. Work is found by state, not by remembering it: paid tasks
are run, completed ones reconciled, unpaid invoices past their expiry expired and, after the
retention, pruned; settlements are applied as the backend reports them. A task found
``running`` under an expired lease (``leases.py``) was interrupted mid-call by its replica's
death: it is failed and refunded rather than run again (a call may already have reached
OpenRouter; running it twice is what must never happen)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator

from billing.l402 import root_key_id
from billing.lightning.settlement import confirmed_settlements
from billing.store import INVOICE_CLAIM, InvoiceRow, TaskRow

from .. import logs
from ..singletons import run_alone
from .context import Context
from .outcomes import Outcomes
from .payments import Payments
from .reconciler import Reconciler
from .runner import Runner
from .states import Hub, State, move

log = logging.getLogger(__name__)
#: How many unpaid invoices one sweep expires or prunes at most (the rest wait for the next).
SWEEP_BATCH = 200


class Workers:
    def __init__(
        self,
        ctx: Context,
        hub: Hub,
        payments: Payments,
        runner: Runner,
        outcomes: Outcomes,
        reconciler: Reconciler,
    ) -> None:
        self._ctx = ctx
        self._hub = hub
        self._payments = payments
        self._runner = runner
        self._outcomes = outcomes
        self._reconciler = reconciler
        self._running: set[str] = set()
        self._reconciling: set[str] = set()
        self._slots = asyncio.Semaphore(ctx.config.max_concurrent_runs)
        hub.work = self.spawn

    async def recover(self, *, starting: bool = False) -> int:
        """Take over ``running`` tasks whose lease expired (their replica died mid-call) and
        fail and refund them. At start-up on a database no other process uses, every lease is
        a dead process's, expired or not."""
        ctx = self._ctx
        lease = ctx.config.lease
        now = math.inf if starting and not ctx.store.shared else time.time()
        async with ctx.store.read() as tx:
            lapsed = await tx.unleased_tasks([State.RUNNING], now)
        taken = 0
        for task in lapsed:
            async with ctx.store.transaction() as tx:
                current = await tx.task(task.id)
                if current is None or current.state != State.RUNNING:
                    continue  # finished meanwhile by its replica
                if not await tx.claim_lease(task.id, lease.owner, lease.until(time.time()), now):
                    continue  # renewed meanwhile: its replica lives
            log.warning("taking over %s: its lease expired while running", task.id)
            # The lease is this replica's now (the old holder's heartbeat no longer reaches
            # it); the task is failed only if its old holder did not complete it meanwhile.
            after = await self._outcomes.fail(
                current, "interrupted while running; refunded", only_from=State.RUNNING
            )
            taken += after.state == State.REFUNDED
        return taken

    async def heartbeat(self) -> None:
        """Every third of a lease: renew this replica's leases and claims (a batch of expired
        invoices may take longer than a lease), then take over the work of replicas whose
        leases ran out."""
        lease = self._ctx.config.lease
        while True:
            await asyncio.sleep(lease.heartbeat)
            try:
                async with self._ctx.store.transaction() as tx:
                    now = time.time()
                    await tx.renew_leases(lease.owner, lease.until(now))
                    await tx.renew_claims(lease.owner, lease.until(now), now)
                await self.recover()
            except Exception:
                log.exception("renewing or taking over leases failed")

    def spawn(self, task: TaskRow) -> None:
        """Start work on a paid or completed task unless it is already in hand."""
        if task.state == State.PAID and task.id not in self._running:
            self._running.add(task.id)
            self._outcomes.background(self._run_one(task))
        elif task.state == State.COMPLETED and task.id not in self._reconciling:
            self._reconciling.add(task.id)
            self._outcomes.background(self._reconcile_one(task))

    async def start_run(self, task: TaskRow) -> TaskRow | None:
        """Move a paid task to running (None if another worker took it)."""
        async with self._ctx.store.transaction() as tx:
            moved = await move(tx, task, State.RUNNING, lease=self._ctx.config.lease)
        if moved is not None:
            self._hub.announce(moved)
        return moved

    async def _run_one(self, task: TaskRow) -> None:
        logs.task_id.set(task.id)  # this runs in a task of its own: its lines name the task
        logs.payer_id.set(task.agent)
        async with self._slots:
            try:
                running = await self.start_run(task)
                if running is not None:
                    await self._runner.run(running)
            except Exception:
                log.exception("running %s failed", task.id)
            finally:
                self._running.discard(task.id)

    async def _reconcile_one(self, task: TaskRow) -> None:
        logs.task_id.set(task.id)
        logs.payer_id.set(task.agent)
        reconciled = None
        try:
            reconciled = await self._reconciler.reconcile(task)
        except Exception:
            log.exception("reconciling %s failed", task.id)
        finally:
            self._reconciling.discard(task.id)
        if reconciled is None:
            await self._release(task.id)

    async def _release(self, task_id: str) -> None:
        """Give up the claim on a task still ``completed`` (reconciling failed): the next
        sweep, on any replica, claims it again."""
        try:
            async with self._ctx.store.transaction() as tx:
                current = await tx.task(task_id)
                if current is not None and current.state == State.COMPLETED:
                    await tx.drop_lease(task_id)
        except Exception:
            log.exception("releasing %s failed", task_id)

    async def _claim_completed(self, now: float) -> list[TaskRow]:
        """Completed tasks nobody is reconciling, leased to this replica (``ClaimsTx``): two
        replicas sweeping at once never both reconcile one, which would look its cost up at
        OpenRouter twice. ``now`` is infinite at start-up on a database no other process
        uses: every lease there is a dead process's."""
        ctx = self._ctx
        async with ctx.store.read() as tx:
            if not await tx.unleased_tasks([State.COMPLETED], now):
                return []  # the usual case: no write transaction
        lease = ctx.config.lease
        async with ctx.store.transaction() as tx:
            return await tx.claim_tasks(
                [State.COMPLETED], lease.owner, lease.until(time.time()), now, SWEEP_BATCH
            )

    async def _claim_expired(self, now: float) -> list[InvoiceRow]:
        """Expired open invoices claimed for this replica (``ClaimsTx``): two replicas
        sweeping at once never both ask the backend about one. A claim this replica does not
        finish (it died, or the sweep failed midway) is taken by the next sweep once it runs
        out: its own at once, another replica's after a lease."""
        lease = self._ctx.config.lease
        async with self._ctx.store.transaction() as tx:
            return await tx.claim_expired_invoices(
                lease.owner, lease.until(time.time()), now, SWEEP_BATCH
            )

    def _pushed(self, payment_hash: str | None) -> None:
        hook = self._ctx.hooks.pushed
        if payment_hash is not None and hook is not None:
            hook(payment_hash)

    async def settlements(self) -> None:
        async for status in confirmed_settlements(
            self._ctx.lightning, self._payments.open_invoice_hashes, on_hint=self._pushed
        ):
            try:
                await self._payments.on_settled(status)
            except Exception:
                log.exception("applying settlement %s failed", status.payment_hash[:16])

    async def sweep(self) -> None:
        """The safety net behind the direct hand-offs and the notes: on start and then every
        sweep interval, pick up paid tasks, claim completed ones nobody holds, expire unpaid
        invoices (by index, in batches) and prune what stayed unpaid past the retention."""
        ctx = self._ctx
        pruned_at = 0.0
        starting = True
        while True:
            now = time.time()
            async with ctx.store.read() as tx:
                ready = await tx.tasks_in_states([State.PAID])
                expiring = await tx.expired_open_invoices(now, 1)  # any to claim?
                waiting = await tx.count_open_invoices()
            ready += await self._claim_completed(
                math.inf if starting and not ctx.store.shared else now
            )
            starting = False
            for task in ready:
                self.spawn(task)
            if ctx.metrics is not None:
                ctx.metrics.open_invoices.set(waiting)
            for invoice in await self._claim_expired(now) if expiring else []:
                try:
                    await self._expire(invoice)
                except Exception:  # its claim stays this replica's: the next sweep retries
                    log.exception("expiring %s failed", invoice.payment_hash[:16])
            retention = ctx.config.unpaid_retention
            if now - pruned_at >= min(60.0, max(retention, 1.0)):
                await self._prune(now - retention)
                pruned_at = now
            await asyncio.sleep(ctx.config.sweep_interval)

    async def _expire(self, invoice: InvoiceRow) -> None:
        """An invoice past its expiry: paid at the last moment after all, or expired (with
        its task, if it was a task's)."""
        owner = self._ctx.config.lease.owner
        if await self._payments.confirm(invoice.payment_hash):
            async with self._ctx.store.transaction() as tx:
                await tx.drop_claim(INVOICE_CLAIM, invoice.payment_hash, owner)
            return
        moved: TaskRow | None = None
        async with self._ctx.store.transaction() as tx:
            await tx.drop_claim(INVOICE_CLAIM, invoice.payment_hash, owner)
            if not await tx.set_invoice_status(invoice.payment_hash, "expired", None):
                return
            task = await tx.task(invoice.ref) if invoice.purpose == "task" else None
            if task is not None and task.state == State.AWAITING_PAYMENT:
                moved = await move(tx, task, State.EXPIRED)
        if moved is not None:
            self._hub.announce(moved)

    async def _prune(self, before: float) -> None:
        """Forget unpaid invoices, challenges and tasks that expired before ``before``."""
        while True:
            async with self._ctx.store.transaction() as tx:
                stale = await tx.expired_invoices(before, SWEEP_BATCH)
                for invoice in stale:
                    root = None
                    if invoice.purpose == "l402":
                        token_id = invoice.ref.removeprefix("l402_")
                        root = root_key_id(invoice.payment_hash, token_id)
                    await tx.delete_unpaid(invoice, root)
            if len(stale) < SWEEP_BATCH:
                return
            await asyncio.sleep(0)  # let requests in between batches

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Recover, then run the workers until the block exits."""
        ctx = self._ctx
        if not ctx.store.shared:  # no other process uses it: every claim is a dead one's
            lease = ctx.config.lease
            async with ctx.store.transaction() as tx:
                await tx.renew_claims(lease.owner, lease.until(time.time()), math.inf)
        await self.recover(starting=True)
        workers = [
            asyncio.create_task(self.settlements()),
            asyncio.create_task(self.sweep()),
            asyncio.create_task(self.heartbeat()),
            asyncio.create_task(self._hub.follow()),
        ]
        if ctx.callbacks is not None:  # one sender across replicas: two would send each twice
            workers.append(
                asyncio.create_task(run_alone(ctx.store, "callbacks", ctx.callbacks.run))
            )
        if ctx.payouts is not None:  # finishes payouts a crash left open, then keeps looking
            workers.append(asyncio.create_task(ctx.payouts.run(ctx.config.sweep_interval)))
        try:
            yield
        finally:
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
