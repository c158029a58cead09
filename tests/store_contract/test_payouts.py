"""PayoutsTx: one payout per payment hash and per ref, compare-and-set outcomes."""

from __future__ import annotations

from dataclasses import replace

from billing.store import PayoutRow, Store


def _payout(h: str, ref: str, created: float = 1.0, state: str = "reserved") -> PayoutRow:
    return PayoutRow(h, ref, "agent", f"lnbc{h}", 40_000, 2_000, state, created, created)


async def test_a_payout_is_inserted_once_per_hash_and_per_ref(store: Store) -> None:
    first = _payout("h1", "w1")
    async with store.transaction() as tx:
        assert await tx.insert_payout(first) is True
        assert await tx.insert_payout(replace(first, amount_msat=1)) is False  # same hash
        assert await tx.insert_payout(_payout("h2", "w1")) is False  # same ref
        assert await tx.payout("h2") is None
    async with store.read() as tx:
        assert await tx.payout("h1") == first
        assert await tx.payout("nope") is None


async def test_update_writes_the_outcome_only_from_the_expected_state(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_payout(_payout("h1", "w1"))
    flight = replace(_payout("h1", "w1"), state="in_flight", updated_at=2.0, attempted_at=2.0)
    done = replace(flight, state="succeeded", updated_at=3.0, fee_msat=500, preimage="ab" * 32)
    async with store.transaction() as tx:
        assert await tx.update_payout(flight, expected_state="reserved")
        assert not await tx.update_payout(
            replace(flight, state="failed", error="late"), expected_state="reserved"
        )
        assert await tx.update_payout(done, expected_state="in_flight")
        assert not await tx.update_payout(_payout("nope", "w9"), expected_state="reserved")
    async with store.read() as tx:
        assert await tx.payout("h1") == done


async def test_payouts_in_states_oldest_first(store: Store) -> None:
    async with store.transaction() as tx:
        for h, created, state in [
            ("c", 3.0, "in_flight"),
            ("a", 1.0, "reserved"),
            ("b", 2.0, "in_flight"),
            ("d", 0.5, "succeeded"),
        ]:
            await tx.insert_payout(_payout(h, f"w{h}", created, state))
    async with store.read() as tx:
        found = await tx.payouts_in_states(["reserved", "in_flight"])
        assert [p.payment_hash for p in found] == ["a", "b", "c"]
        assert await tx.payouts_in_states(["failed"]) == []
