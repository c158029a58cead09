"""InvoicesTx: invoices, their status moves, the bounded expiry queries and pruning."""

from __future__ import annotations

import pytest

from billing.store import InvoiceRow, Store, StoreError, TaskRow


def _invoice(
    h: str, expires_at: float, status: str = "open", purpose: str = "deposit", ref: str = "a"
) -> InvoiceRow:
    return InvoiceRow(h, f"lnbc{h}", 1_000, purpose, ref, status, 1.0, expires_at)


async def _insert(store: Store, *invoices: InvoiceRow) -> None:
    async with store.transaction() as tx:
        for invoice in invoices:
            await tx.insert_invoice(invoice)


async def test_an_invoice_reads_back_as_written(store: Store) -> None:
    row = InvoiceRow("h1", "lnbc1", 2_000, "task", "t1", "settled", 1.5, 9.5, 3.25)
    await _insert(store, row)
    async with store.read() as tx:
        assert await tx.invoice("h1") == row
        assert await tx.invoice("h2") is None


async def test_a_payment_hash_is_stored_once(store: Store) -> None:
    await _insert(store, _invoice("h1", 10.0))
    with pytest.raises(StoreError):
        await _insert(store, _invoice("h1", 20.0, ref="other"))
    async with store.read() as tx:
        assert (await tx.invoice("h1")) == _invoice("h1", 10.0)


async def test_open_invoices_soonest_expiry_first_and_bounded(store: Store) -> None:
    await _insert(
        store,
        _invoice("late", 30.0),
        _invoice("soon", 12.0),
        _invoice("mid", 20.0),
        _invoice("gone", 5.0),
        _invoice("paid", 15.0, status="settled"),
    )
    async with store.read() as tx:
        assert [i.payment_hash for i in await tx.open_invoices(10.0, 10)] == [
            "soon",
            "mid",
            "late",
        ]
        assert [i.payment_hash for i in await tx.open_invoices(10.0, 2)] == ["soon", "mid"]
        assert await tx.count_open_invoices() == 4  # expired or not


async def test_expired_open_invoices_longest_expired_first_and_bounded(store: Store) -> None:
    await _insert(
        store,
        _invoice("b", 8.0),
        _invoice("a", 2.0),
        _invoice("c", 10.0),  # expiry at now counts as expired
        _invoice("live", 11.0),
        _invoice("marked", 1.0, status="expired"),
    )
    async with store.read() as tx:
        assert [i.payment_hash for i in await tx.expired_open_invoices(10.0, 10)] == [
            "a",
            "b",
            "c",
        ]
        assert [i.payment_hash for i in await tx.expired_open_invoices(10.0, 1)] == ["a"]


async def test_expired_invoices_before_a_time_and_bounded(store: Store) -> None:
    await _insert(
        store,
        _invoice("x2", 20.0, status="expired"),
        _invoice("x1", 10.0, status="expired"),
        _invoice("x3", 30.0, status="expired"),
        _invoice("open", 5.0),
    )
    async with store.read() as tx:
        assert [i.payment_hash for i in await tx.expired_invoices(30.0, 10)] == ["x1", "x2"]
        assert [i.payment_hash for i in await tx.expired_invoices(99.0, 2)] == ["x1", "x2"]


@pytest.mark.parametrize(
    ("before", "after", "moves"),
    [
        ("open", "settled", True),
        ("open", "expired", True),
        ("open", "cancelled", True),
        ("expired", "settled", True),  # money that arrived late is never ignored
        ("expired", "cancelled", False),
        ("expired", "open", False),
        ("settled", "settled", False),
        ("settled", "expired", False),
        ("cancelled", "settled", False),
    ],
)
async def test_status_moves_only_from_open_or_expired_to_settled(
    store: Store, before: str, after: str, moves: bool
) -> None:
    await _insert(store, _invoice("h1", 10.0, status=before))
    settled_at = 4.0 if after == "settled" else None
    async with store.transaction() as tx:
        assert await tx.set_invoice_status("h1", after, settled_at) is moves
        assert await tx.set_invoice_status("nope", after, settled_at) is False
    async with store.read() as tx:
        row = await tx.invoice("h1")
    assert row is not None
    assert (row.status, row.settled_at) == ((after, settled_at) if moves else (before, None))


async def test_delete_unpaid_forgets_the_invoice_its_expired_task_and_root_key(
    store: Store,
) -> None:
    invoice = _invoice("h1", 5.0, status="expired", purpose="task", ref="t1")
    async with store.transaction() as tx:
        await tx.insert_invoice(invoice)
        await tx.insert_task(TaskRow("t1", "expired", None, {}, 1.0, 6.0))
        event = await tx.append_event("task.expired", "t1", {}, 6.0)
        await tx.insert_delivery(event, "t1", "https://cb.example", "pending", 6.0)
        other = await tx.append_event("task.paid", "t2", {}, 6.0)
        await tx.insert_delivery(other, "t2", "https://cb.example", "pending", 6.0)
        await tx.put_root_key("rk1", b"k" * 32, 1.0)
        await tx.put_root_key("rk2", b"j" * 32, 1.0)
    async with store.transaction() as tx:
        await tx.delete_unpaid(invoice, "rk1")
    async with store.read() as tx:
        assert await tx.invoice("h1") is None
        assert await tx.task("t1") is None
        assert await tx.events_for("t1") == []
        assert [e.key for e in await tx.events_after(0)] == ["t2"]
        pending = await tx.pending_deliveries("https://cb.example", 10)
        assert [(d.event_id, d.task_id) for d in pending] == [(other, "t2")]
        assert await tx.root_key("rk1") is None
        assert await tx.root_key("rk2") == b"j" * 32


async def test_delete_unpaid_keeps_what_was_paid_or_moved_on(store: Store) -> None:
    settled = _invoice("h1", 5.0, status="settled", purpose="task", ref="t1")
    expired = _invoice("h2", 5.0, status="expired", purpose="task", ref="t2")
    async with store.transaction() as tx:
        await tx.insert_invoice(settled)
        await tx.insert_invoice(expired)
        await tx.insert_task(TaskRow("t1", "paid", None, {}, 1.0, 1.0))
        await tx.insert_task(TaskRow("t2", "paid", None, {}, 1.0, 1.0))  # paid another way
        await tx.append_event("task.paid", "t2", {}, 1.0)
    async with store.transaction() as tx:
        await tx.delete_unpaid(settled, None)
        await tx.delete_unpaid(expired, None)
    async with store.read() as tx:
        assert await tx.invoice("h1") == settled
        assert await tx.invoice("h2") is None
        assert await tx.task("t1") is not None
        assert await tx.task("t2") is not None
        assert [e.key for e in await tx.events_for("t2")] == ["t2"]
