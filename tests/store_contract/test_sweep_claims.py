"""ClaimsTx for the sweeps: expired open invoices and open payouts claimed by one claimant at a
time, taken again once the claim expires, given up by their holder only."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from billing.store import INVOICE_CLAIM, PAYOUT_CLAIM, InvoiceRow, PayoutRow, Store, open_store


async def _invoices(store: Store, *rows: tuple[str, str, float]) -> None:
    async with store.transaction() as tx:
        for payment_hash, status, expires_at in rows:
            await tx.insert_invoice(
                InvoiceRow(
                    payment_hash, f"lnbc_{payment_hash}", 1000, "task", "t", status, 0.0, expires_at
                )
            )


async def _payouts(store: Store, *rows: tuple[str, str]) -> None:
    async with store.transaction() as tx:
        for n, (payment_hash, state) in enumerate(rows):
            await tx.insert_payout(
                PayoutRow(
                    payment_hash,
                    f"wd_{payment_hash}",
                    "a",
                    f"lnbc_{payment_hash}",
                    1000,
                    10,
                    state,
                    1.0 + n,
                    1.0 + n,
                )
            )


async def _claim_invoices(store: Store, owner: str, now: float, limit: int = 10) -> list[str]:
    async with store.transaction() as tx:
        claimed = await tx.claim_expired_invoices(owner, now + 10, now, limit)
    return [i.payment_hash for i in claimed]


async def _claim_payouts(store: Store, owner: str, now: float, limit: int = 10) -> list[str]:
    async with store.transaction() as tx:
        claimed = await tx.claim_payouts(["reserved", "in_flight"], owner, now + 10, now, limit)
    return [p.payment_hash for p in claimed]


async def test_invoice_claims_take_open_expired_invoices_soonest_expired_first(
    store: Store,
) -> None:
    await _invoices(
        store,
        ("h1", "open", 8.0),
        ("h2", "open", 50.0),  # not expired yet at 10
        ("h3", "settled", 1.0),
        ("h4", "open", 2.0),
        ("h5", "expired", 1.0),
    )
    async with store.transaction() as tx:
        claimed = await tx.claim_expired_invoices("r1", 20.0, 10.0, 10)
    assert [(i.payment_hash, i.bolt11, i.expires_at) for i in claimed] == [
        ("h4", "lnbc_h4", 2.0),
        ("h1", "lnbc_h1", 8.0),
    ]
    assert await _claim_invoices(store, "r2", 15.0) == []  # held by r1 until 20
    assert await _claim_invoices(store, "r1", 15.0) == ["h4", "h1"]  # its own, renewed to 25
    assert await _claim_invoices(store, "r2", 21.0) == []
    assert await _claim_invoices(store, "r2", 26.0) == ["h4", "h1"]  # r1's claims ran out


async def test_a_dropped_invoice_claim_is_free_and_only_its_holder_drops_it(store: Store) -> None:
    await _invoices(store, ("h1", "open", 1.0), ("h2", "open", 2.0))
    assert await _claim_invoices(store, "r1", 10.0) == ["h1", "h2"]
    async with store.transaction() as tx:
        await tx.drop_claim(INVOICE_CLAIM, "h1", "r1")
        await tx.drop_claim(INVOICE_CLAIM, "h2", "r2")  # not r2's: kept
        await tx.drop_claim(PAYOUT_CLAIM, "h2", "r1")  # another kind: kept
    assert await _claim_invoices(store, "r2", 11.0) == ["h1"]


async def test_payout_claims_take_open_payouts_oldest_first(store: Store) -> None:
    await _payouts(
        store, ("p1", "in_flight"), ("p2", "succeeded"), ("p3", "reserved"), ("p4", "failed")
    )
    async with store.transaction() as tx:
        claimed = await tx.claim_payouts(["reserved", "in_flight"], "r1", 20.0, 10.0, 1)
    assert [(p.payment_hash, p.state, p.ref) for p in claimed] == [("p1", "in_flight", "wd_p1")]
    assert await _claim_payouts(store, "r2", 15.0) == ["p3"]
    assert await _claim_payouts(store, "r3", 15.0) == []
    assert await _claim_payouts(store, "r3", 30.0) == ["p1", "p3"]  # both claims ran out
    async with store.transaction() as tx:
        await tx.drop_claim(PAYOUT_CLAIM, "p3", "r3")
    assert await _claim_payouts(store, "r1", 31.0) == ["p3"]


async def test_claimants_at_once_never_share_an_invoice_or_a_payout(store: Store, url: str) -> None:
    await _invoices(store, *((f"h{n:02}", "open", 1.0 + n) for n in range(40)))
    await _payouts(store, *((f"p{n:02}", "in_flight") for n in range(40)))
    others = [await open_store(url) if store.shared else store for _ in range(3)]
    try:
        got = await asyncio.gather(
            *(
                # two claimants per store (a claimant's second claim would renew its first)
                claim(other, f"r{n}{m}", 100.0, limit=7)
                for n, other in enumerate(others)
                for m in "ab"
                for claim in (_claim_invoices, _claim_payouts)
            )
        )
    finally:
        for other in others:
            if other is not store:
                await other.close()
    claimed = [key for batch in got for key in batch]
    assert len(claimed) == len(set(claimed)) == 80


async def test_renewing_extends_the_owners_claims_and_forgets_expired_ones(store: Store) -> None:
    await _invoices(store, ("h1", "open", 1.0), ("h2", "open", 2.0), ("h3", "open", 3.0))
    assert await _claim_invoices(store, "r1", 10.0, limit=2) == ["h1", "h2"]  # until 20
    assert await _claim_invoices(store, "r2", 10.0) == ["h3"]  # until 20
    async with store.transaction() as tx:
        assert await tx.renew_claims("r1", 40.0, 30.0) == 2  # r2's expired: forgotten
    assert await _claim_invoices(store, "r3", 35.0) == ["h3"]  # r1's run until 40
    async with store.transaction() as tx:
        assert await tx.renew_claims("r2", 50.0, 36.0) == 0


async def test_renewing_forgets_claims_on_rows_no_longer_open(store: Store) -> None:
    await _invoices(store, ("h1", "open", 1.0), ("h2", "open", 2.0))
    await _payouts(store, ("p1", "in_flight"), ("p2", "reserved"))
    assert await _claim_invoices(store, "r1", 10.0) == ["h1", "h2"]
    assert await _claim_payouts(store, "r1", 10.0) == ["p1", "p2"]
    async with store.transaction() as tx:
        assert await tx.set_invoice_status("h1", "settled", 11.0)
        p1 = await tx.payout("p1")
        assert p1 is not None
        assert await tx.update_payout(replace(p1, state="succeeded"), expected_state="in_flight")
        assert await tx.renew_claims("r1", 40.0, 12.0) == 2  # h2 and p2 only
