"""AuditTx: the chain's tail, appends with unique sequence numbers, bounded reads in order."""

from __future__ import annotations

import pytest

from billing.store import Store, StoreError


async def test_the_tail_follows_appends_and_reads_are_in_order(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.audit_tail() is None
        for seq in (1, 2, 3):
            await tx.insert_audit(seq, seq * 1.5, "money", f'{{"n":{seq}}}', f"p{seq}", f"h{seq}")
        assert await tx.audit_tail() == (3, "h3")
    async with store.read() as tx:
        assert await tx.audit_after(0, 10) == [
            (1, 1.5, "money", '{"n":1}', "p1", "h1"),
            (2, 3.0, "money", '{"n":2}', "p2", "h2"),
            (3, 4.5, "money", '{"n":3}', "p3", "h3"),
        ]
        assert [r[0] for r in await tx.audit_after(1, 1)] == [2]
        assert await tx.audit_after(3, 10) == []


async def test_a_sequence_number_is_used_once(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_audit(1, 1.0, "admin", "{}", "p", "h1")
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.insert_audit(1, 2.0, "admin", "{}", "p", "forged")
    async with store.read() as tx:
        assert await tx.audit_tail() == (1, "h1")
