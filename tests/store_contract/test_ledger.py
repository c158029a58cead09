"""LedgerTx: accounts, journal entries, postings and the sums the ledger check reads."""

from __future__ import annotations

import pytest

from billing.store import AccountRow, EntryStart, LedgerTx, PostingRow, Store, StoreError

ACCOUNTS = [
    ("assets:lightning", "msat", "asset", False),
    ("liabilities:agent:a", "msat", "liability", True),
    ("liabilities:agent:b", "msat", "liability", True),
    ("income:revenue", "msat", "income", False),
]


async def _post(
    tx: LedgerTx, key: str, legs: list[tuple[str, int]], *, ref: str | None = None, at: float = 1.0
) -> int:
    return await tx.insert_journal(
        key, "test", ref, None, "digest:" + key, [PostingRow(a, "msat", n) for a, n in legs], at
    )


async def test_ensure_accounts_creates_the_missing_and_keeps_the_existing(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.account("assets:lightning") is None
        await tx.ensure_accounts(ACCOUNTS, 1.0)
        await _post(tx, "k1", [("assets:lightning", 7), ("liabilities:agent:a", -7)])
        # Again, with different attributes: nothing about an existing account changes.
        await tx.ensure_accounts([("assets:lightning", "nusd", "expense", True)], 2.0)
    async with store.read() as tx:
        assert await tx.account("assets:lightning") == AccountRow(
            "assets:lightning", "msat", "asset", False, 7
        )
        assert await tx.account("liabilities:agent:a") == AccountRow(
            "liabilities:agent:a", "msat", "liability", True, -7
        )


async def test_start_entry_reads_the_key_the_balances_and_the_audit_tail(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.start_entry("k1", ACCOUNTS[:2], 1.0) == EntryStart(
            None, {"assets:lightning": 0, "liabilities:agent:a": 0}, None
        )
        await _post(tx, "k1", [("assets:lightning", 7), ("liabilities:agent:a", -7)])
        await tx.insert_audit(1, 1.0, "money", "{}", "0" * 64, "h1")
        # A key already used, an existing account with its balance and a new one, the tail.
        started = await tx.start_entry("k1", [ACCOUNTS[1], ACCOUNTS[3]], 2.0)
    assert started == EntryStart(
        "digest:k1", {"liabilities:agent:a": -7, "income:revenue": 0}, (1, "h1")
    )
    async with store.read() as tx:  # the missing account was created, the others kept
        assert await tx.account("income:revenue") == AccountRow(
            "income:revenue", "msat", "income", False, 0
        )
        assert await tx.account("liabilities:agent:a") == AccountRow(
            "liabilities:agent:a", "msat", "liability", True, -7
        )


async def test_accounts_by_prefix_in_code_order(store: Store) -> None:
    async with store.transaction() as tx:
        for i, account in enumerate(reversed(ACCOUNTS)):  # created in reverse code order
            await tx.ensure_accounts([account], float(i))
    async with store.read() as tx:
        assert [a.code for a in await tx.accounts("liabilities:")] == [
            "liabilities:agent:a",
            "liabilities:agent:b",
        ]
        assert [a.code for a in await tx.accounts()] == sorted(a[0] for a in ACCOUNTS)
        assert await tx.accounts("nothing:") == []


async def test_an_entry_keeps_its_postings_and_moves_balances(store: Store) -> None:
    legs = [("liabilities:agent:a", 30), ("income:revenue", -20), ("assets:lightning", -10)]
    async with store.transaction() as tx:
        await tx.ensure_accounts(ACCOUNTS, 1.0)
        first = await _post(tx, "k1", [("assets:lightning", 100), ("liabilities:agent:a", -100)])
        second = await _post(tx, "k2", legs, ref="t1", at=2.0)
    assert second > first
    async with store.read() as tx:
        entry = await tx.journal_by_key("k2")
        assert entry is not None
        assert (entry.id, entry.idempotency_key, entry.kind, entry.ref, entry.memo) == (
            second,
            "k2",
            "test",
            "t1",
            None,
        )
        assert (entry.digest, entry.created_at) == ("digest:k2", 2.0)
        assert entry.postings == tuple(PostingRow(a, "msat", n) for a, n in legs)
        assert await tx.journal_by_key("k3") is None
        balances = {a.code: a.balance for a in await tx.accounts()}
    assert balances == {
        "assets:lightning": 90,
        "liabilities:agent:a": -70,
        "liabilities:agent:b": 0,
        "income:revenue": -20,
    }


async def test_a_used_idempotency_key_is_refused(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_accounts(ACCOUNTS, 1.0)
        await _post(tx, "k1", [("assets:lightning", 1), ("income:revenue", -1)])
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await _post(tx, "k1", [("assets:lightning", 2), ("income:revenue", -2)])
    async with store.read() as tx:
        assert await tx.account("assets:lightning") == AccountRow(
            "assets:lightning", "msat", "asset", False, 1
        )


async def test_journal_by_ref_in_posting_order(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_accounts(ACCOUNTS, 1.0)
        for key, ref in [("b", "t1"), ("a", "t2"), ("c", "t1")]:
            await _post(tx, key, [("assets:lightning", 1), ("income:revenue", -1)], ref=ref)
    async with store.read() as tx:
        assert [e.idempotency_key for e in await tx.journal_by_ref("t1")] == ["b", "c"]
        assert await tx.journal_by_ref("t9") == []


async def test_ledger_totals_find_what_does_not_balance(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_accounts(ACCOUNTS, 1.0)
        await tx.ensure_accounts([("assets:openrouter", "nusd", "asset", False)], 1.0)
        await _post(tx, "ok", [("assets:lightning", 50), ("liabilities:agent:a", -50)])
        await tx.insert_journal(
            "credits", "test", None, None, "d", [PostingRow("assets:openrouter", "nusd", 9)], 1.0
        )
        # The store checks nothing: an overdraft written here is for the check to find.
        bad = await _post(tx, "bad", [("liabilities:agent:b", 5), ("income:revenue", -3)])
    async with store.read() as tx:
        totals = await tx.ledger_totals()
    assert totals.by_currency == {"msat": 2, "nusd": 9}
    assert bad in totals.unbalanced_entries
    assert totals.overdrawn == [("liabilities:agent:b", -5)]
    assert totals.drifted_accounts == []
    assert (totals.entries, totals.postings, totals.accounts) == (3, 5, 5)


async def test_ledger_totals_of_an_empty_ledger(store: Store) -> None:
    async with store.read() as tx:
        totals = await tx.ledger_totals()
    assert totals.by_currency == {}
    assert totals.unbalanced_entries == totals.overdrawn == totals.drifted_accounts == []
    assert (totals.entries, totals.postings, totals.accounts) == (0, 0, 0)


async def test_account_flow_sums_postings_since_a_time(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_accounts(ACCOUNTS, 1.0)
        for key, amount, at in [("a", 10, 1.0), ("b", 20, 5.0), ("c", -4, 9.0)]:
            await _post(tx, key, [("assets:lightning", amount), ("income:revenue", -amount)], at=at)
    async with store.read() as tx:
        assert await tx.account_flow("assets:lightning", 0.0) == 26
        assert await tx.account_flow("assets:lightning", 5.0) == 16  # since is inclusive
        assert await tx.account_flow("income:revenue", 5.0) == -16
        assert await tx.account_flow("assets:lightning", 10.0) == 0
        assert await tx.account_flow("nobody", 0.0) == 0
