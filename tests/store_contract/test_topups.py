"""TopupsTx: top-ups with a JSON document, compare-and-set state changes, filtered reads."""

from __future__ import annotations

import pytest

from billing.store import Store, StoreError, TopupRow


def _topup(topup_id: str, state: str, created: float) -> TopupRow:
    return TopupRow(topup_id, state, 1_000, 5_000, {"executor": "lnbits"}, created, created)


async def _insert(store: Store, *topups: TopupRow) -> None:
    async with store.transaction() as tx:
        for topup in topups:
            await tx.insert_topup(topup)


async def test_a_topup_reads_back_and_its_id_is_stored_once(store: Store) -> None:
    row = TopupRow("u1", "paying", 2_000, 9_000, {"invoice_msat": 2_000, "x": [1]}, 1.5, 2.5)
    await _insert(store, row)
    with pytest.raises(StoreError):
        await _insert(store, _topup("u1", "new", 3.0))
    async with store.read() as tx:
        assert await tx.topups() == [row]


async def test_update_is_a_compare_and_set_on_the_state(store: Store) -> None:
    await _insert(store, _topup("u1", "paying", 1.0))
    async with store.transaction() as tx:
        assert await tx.update_topup(
            "u1", state="paid", data={"fee_msat": 3}, expected_state="paying", now=2.0
        )
        assert not await tx.update_topup(
            "u1", state="failed", data={}, expected_state="paying", now=3.0
        )
        assert not await tx.update_topup(
            "nope", state="paid", data={}, expected_state="paying", now=3.0
        )
    async with store.read() as tx:
        assert await tx.topups() == [
            TopupRow("u1", "paid", 1_000, 5_000, {"fee_msat": 3}, 1.0, 2.0)
        ]


async def test_topups_by_state_and_age_oldest_first(store: Store) -> None:
    await _insert(
        store,
        _topup("c", "confirmed", 3.0),
        _topup("a", "paid", 1.0),
        _topup("b", "confirmed", 2.0),
        _topup("d", "failed", 4.0),
    )
    async with store.read() as tx:
        assert [t.id for t in await tx.topups()] == ["a", "b", "c", "d"]
        assert [t.id for t in await tx.topups(("confirmed", "paid"))] == ["a", "b", "c"]
        assert [t.id for t in await tx.topups(since=2.0)] == ["b", "c", "d"]  # inclusive
        assert [t.id for t in await tx.topups(("confirmed",), since=2.5)] == ["c"]
        assert await tx.topups(("expired",)) == []
