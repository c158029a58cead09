"""What only PostgreSQL's claims promise: rows another transaction has locked are passed over
(``SKIP LOCKED``), not waited for."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from billing.store import InvoiceRow, PayoutRow, TaskRow, open_store

pytestmark = pytest.mark.postgresql


async def test_a_claim_passes_over_rows_another_transaction_holds(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    other = await asyncpg.connect(postgres_url)
    try:
        async with store.transaction() as tx:
            for n in range(3):
                await tx.insert_task(TaskRow(f"t{n}", "completed", "a", {}, 1.0 + n, 1.0 + n))
        async with other.transaction():
            await other.execute("SELECT id FROM tasks WHERE id = 't1' FOR UPDATE")
            async with store.transaction() as tx:
                # A bound on a wait that must not happen, not a speed target.
                claimed = await asyncio.wait_for(
                    tx.claim_tasks(["completed"], "r1", 20.0, 10.0, 10), 10
                )
        assert [t.id for t in claimed] == ["t0", "t2"]
    finally:
        await other.close()
        await store.close()


async def test_sweep_claims_pass_over_invoices_and_payouts_another_transaction_holds(
    postgres_url: str,
) -> None:
    store = await open_store(postgres_url)
    other = await asyncpg.connect(postgres_url)
    try:
        async with store.transaction() as tx:
            for n in range(3):
                await tx.insert_invoice(
                    InvoiceRow(f"h{n}", f"lnbc{n}", 1000, "task", "t", "open", 0.0, 1.0 + n)
                )
                await tx.insert_payout(
                    PayoutRow(f"p{n}", f"wd{n}", "a", f"lnbc{n}", 1000, 10, "in_flight", n, n)
                )
        async with other.transaction():
            await other.execute("SELECT 1 FROM invoices WHERE payment_hash = 'h1' FOR UPDATE")
            await other.execute("SELECT 1 FROM payouts WHERE payment_hash = 'p1' FOR UPDATE")
            async with store.transaction() as tx:
                # A bound on a wait that must not happen, not a speed target.
                invoices = await asyncio.wait_for(
                    tx.claim_expired_invoices("r1", 20.0, 10.0, 10), 10
                )
                payouts = await asyncio.wait_for(
                    tx.claim_payouts(["in_flight"], "r1", 20.0, 10.0, 10), 10
                )
        assert [i.payment_hash for i in invoices] == ["h0", "h2"]
        assert [p.payment_hash for p in payouts] == ["p0", "p2"]
    finally:
        await other.close()
        await store.close()
