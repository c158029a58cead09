"""The double-entry ledger on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from billing import ledger
from billing.ledger import (
    LIGHTNING,
    LLM_COST,
    OPENROUTER_CREDITS,
    REVENUE,
    Entry,
    IdempotencyConflict,
    InsufficientFunds,
    UnbalancedEntry,
    agent_account,
    credit,
    debit,
    escrow_account,
)
from billing.money import Msat, NanoUsd
from billing.store import Store, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path}/satrouter.db")
    yield s
    await s.close()


async def _post(store: Store, entry: Entry) -> bool:
    async with store.transaction() as tx:
        return await ledger.post(tx, entry)


async def _balance(store: Store, account: ledger.Account) -> int:
    async with store.read() as tx:
        return await ledger.balance(tx, account)


def test_entries_must_balance_per_currency() -> None:
    with pytest.raises(UnbalancedEntry):
        Entry("x", "k", (debit(LIGHTNING, Msat(5)), credit(REVENUE, Msat(4))))
    with pytest.raises(UnbalancedEntry):  # balanced in number, not per currency
        Entry("x", "k", (debit(LIGHTNING, Msat(5)), credit(OPENROUTER_CREDITS, NanoUsd(5))))
    with pytest.raises(UnbalancedEntry):
        Entry("x", "k", (debit(LIGHTNING, Msat(5)),))
    with pytest.raises(TypeError):
        debit(LIGHTNING, NanoUsd(5))
    with pytest.raises(ValueError, match="positive"):
        credit(REVENUE, Msat(0))


async def test_a_task_life_posts_balanced_entries(store: Store) -> None:
    assert await _post(store, ledger.invoice_paid_into_escrow("task1", Msat(10_000), "h1"))
    assert await _post(
        store, ledger.settle("task1", "agentA", Msat(10_000), Msat(3_400), NanoUsd(2_000_000))
    )
    assert await _balance(store, LIGHTNING) == 10_000
    assert await _balance(store, REVENUE) == 3_400
    assert await _balance(store, agent_account("agentA")) == 6_600
    assert await _balance(store, escrow_account("task1")) == 0
    assert await _balance(store, LLM_COST) == 2_000_000
    assert await _balance(store, OPENROUTER_CREDITS) == -2_000_000
    async with store.read() as tx:
        result = await ledger.check(tx)
    assert result.ok, result.problems
    assert result.totals.by_currency == {"msat": 0, "nusd": 0}


async def test_replay_posts_nothing_and_a_different_entry_is_refused(store: Store) -> None:
    entry = ledger.deposit("agentA", Msat(5_000), "h1")
    assert await _post(store, entry) is True
    assert await _post(store, entry) is False
    assert await _balance(store, agent_account("agentA")) == 5_000
    with pytest.raises(IdempotencyConflict):
        await _post(store, ledger.deposit("agentA", Msat(6_000), "h1"))


async def test_overdraft_is_refused_and_nothing_is_written(store: Store) -> None:
    await _post(store, ledger.deposit("agentA", Msat(5_000), "h1"))
    with pytest.raises(InsufficientFunds) as caught:
        await _post(store, ledger.reserve("agentA", "t1", Msat(5_001)))
    assert caught.value.balance == 5_000
    assert await _balance(store, agent_account("agentA")) == 5_000
    async with store.read() as tx:
        assert await tx.journal_by_key("reserve:t1") is None


async def test_settle_cannot_take_more_than_escrow_holds(store: Store) -> None:
    await _post(store, ledger.invoice_paid_into_escrow("t1", Msat(1_000), "h1"))
    with pytest.raises(InsufficientFunds):
        await _post(store, ledger.settle("t1", "a", Msat(2_000), Msat(1_500), NanoUsd(1)))
    with pytest.raises(UnbalancedEntry):
        ledger.settle("t1", "a", Msat(1_000), Msat(1_500), NanoUsd(1))


async def test_hundreds_of_concurrent_reservations_never_exceed_the_balance(
    store: Store,
) -> None:
    await _post(store, ledger.deposit("agentA", Msat(100_000), "h1"))

    async def attempt(i: int) -> bool:
        try:
            await _post(store, ledger.reserve("agentA", f"t{i}", Msat(1_000)))
        except InsufficientFunds:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(300)))
    assert sum(results) == 100
    assert await _balance(store, agent_account("agentA")) == 0
    async with store.read() as tx:
        check = await ledger.check(tx)
    assert check.ok, check.problems


async def test_withdrawal_returns_the_unused_fee_limit(store: Store) -> None:
    await _post(store, ledger.deposit("a", Msat(50_000), "h1"))
    await _post(store, ledger.withdrawal_reserve("a", "w1", Msat(40_000), Msat(2_000)))
    await _post(store, ledger.withdrawal_paid("a", "w1", Msat(40_000), Msat(2_000), Msat(500)))
    assert await _balance(store, agent_account("a")) == 50_000 - 40_000 - 500
    assert await _balance(store, LIGHTNING) == 50_000 - 40_500
    await _post(store, ledger.withdrawal_reserve("a", "w2", Msat(5_000), Msat(1_000)))
    await _post(store, ledger.withdrawal_failed("a", "w2", Msat(5_000), Msat(1_000)))
    assert await _balance(store, agent_account("a")) == 9_500


async def test_check_finds_tampering(store: Store, tmp_path: Path) -> None:
    await _post(store, ledger.deposit("a", Msat(5_000), "h1"))
    await _post(store, ledger.reserve("a", "t1", Msat(1_000)))
    with sqlite3.connect(tmp_path / "satrouter.db") as raw:
        raw.execute("UPDATE postings SET amount = amount + 1 WHERE account = 'assets:lightning'")
        raw.execute("UPDATE accounts SET balance = 1 WHERE code = 'liabilities:agent:a'")
    async with store.read() as tx:
        result = await ledger.check(tx)
    assert not result.ok
    text = "\n".join(result.problems)
    assert "postings in msat sum to 1" in text
    assert "does not balance" in text
    assert "liabilities:agent:a" in text and "overdrawn" in text
