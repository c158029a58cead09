"""Accounts, journal entries and postings on PostgreSQL. Contract: ``LedgerTx``.

Sums of bigint are numeric in PostgreSQL: they are cast back to bigint so that amounts stay
Python ints (never Decimal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..rows import AccountRow, EntryStart, JournalRow, LedgerTotals, PostingRow
from .base import PostgresBase

# Account types whose normal side is the credit side: their normal balance is -balance.
_CREDIT_NORMAL = ["liability", "income", "equity"]


class PostgresLedger(PostgresBase):
    async def ensure_accounts(
        self, accounts: Sequence[tuple[str, str, str, bool]], now: float
    ) -> None:
        await self._many(
            "INSERT INTO accounts (code, currency, type, no_overdraft, balance, created_at) "
            "VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (code) DO NOTHING",
            [(code, currency, kind, bool(flag), now) for code, currency, kind, flag in accounts],
        )

    async def account(self, code: str) -> AccountRow | None:
        row = await self._one(
            "SELECT code, currency, type, no_overdraft, balance FROM accounts WHERE code = $1",
            code,
        )
        return AccountRow(row[0], row[1], row[2], row[3], row[4]) if row else None

    async def accounts(self, prefix: str = "") -> list[AccountRow]:
        rows = await self._all(
            "SELECT code, currency, type, no_overdraft, balance FROM accounts "
            "WHERE starts_with(code, $1) ORDER BY code",
            prefix,
        )
        return [AccountRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def _journal(self, where: str, *args: Any) -> list[JournalRow]:
        rows = await self._all(
            "SELECT id, idempotency_key, kind, ref, memo, digest, created_at FROM journal "
            f"WHERE {where} ORDER BY id",
            *args,
        )
        if not rows:
            return []
        postings: dict[int, list[PostingRow]] = {r[0]: [] for r in rows}
        for p in await self._all(
            "SELECT journal_id, account, currency, amount FROM postings "
            "WHERE journal_id = ANY($1::bigint[]) ORDER BY id",
            list(postings),
        ):
            postings[p[0]].append(PostingRow(p[1], p[2], p[3]))
        return [
            JournalRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(postings[r[0]]))
            for r in rows
        ]

    async def journal_by_key(self, idempotency_key: str) -> JournalRow | None:
        rows = await self._journal("idempotency_key = $1", idempotency_key)
        return rows[0] if rows else None

    async def journal_by_ref(self, ref: str) -> list[JournalRow]:
        return await self._journal("ref = $1", ref)

    async def start_entry(
        self,
        idempotency_key: str,
        accounts: Sequence[tuple[str, str, str, bool]],
        now: float,
    ) -> EntryStart:
        # One statement. An account the CTE creates is not in the statement's snapshot: it
        # is missing from the balances, which is its balance, 0.
        row = await self._one(
            "WITH ensured AS (INSERT INTO accounts "
            "(code, currency, type, no_overdraft, balance, created_at) "
            "SELECT code, currency, type, flag, 0, $6 "
            "FROM unnest($2::text[], $3::text[], $4::text[], $5::bool[]) "
            "AS a(code, currency, type, flag) ON CONFLICT (code) DO NOTHING), "
            "tail AS (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) "
            "SELECT (SELECT digest FROM journal WHERE idempotency_key = $1), "
            "ARRAY(SELECT code FROM accounts WHERE code = ANY($2::text[]) ORDER BY code), "
            "ARRAY(SELECT balance FROM accounts WHERE code = ANY($2::text[]) ORDER BY code), "
            "(SELECT seq FROM tail), (SELECT hash FROM tail)",
            idempotency_key,
            [a[0] for a in accounts],
            [a[1] for a in accounts],
            [a[2] for a in accounts],
            [bool(a[3]) for a in accounts],
            now,
        )
        assert row is not None
        balances = {code: 0 for code, _, _, _ in accounts}
        balances.update(zip(row[1], row[2], strict=True))
        tail = (int(row[3]), str(row[4])) if row[3] is not None else None
        return EntryStart(row[0], balances, tail)

    async def insert_journal(
        self,
        idempotency_key: str,
        kind: str,
        ref: str | None,
        memo: str | None,
        digest: str,
        postings: Sequence[PostingRow],
        now: float,
    ) -> int:
        # One statement, one round trip: the entry, its postings (in order) and the balances
        # they move (summed per account first: a statement updates a row once).
        journal_id = int(
            await self._value(
                "WITH j AS (INSERT INTO journal (idempotency_key, kind, ref, memo, digest, "
                "created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id), "
                "p AS (INSERT INTO postings (journal_id, account, currency, amount) "
                "SELECT j.id, x.account, x.currency, x.amount FROM j, "
                "unnest($7::text[], $8::text[], $9::bigint[]) WITH ORDINALITY "
                "AS x(account, currency, amount, n) ORDER BY x.n), "
                "b AS (UPDATE accounts SET balance = accounts.balance + d.amount "
                "FROM (SELECT account, SUM(amount)::bigint AS amount "
                "FROM unnest($7::text[], $9::bigint[]) AS y(account, amount) GROUP BY account) d "
                "WHERE accounts.code = d.account) "
                "SELECT id FROM j",
                idempotency_key,
                kind,
                ref,
                memo,
                digest,
                now,
                [p.account for p in postings],
                [p.currency for p in postings],
                [p.amount for p in postings],
            )
        )
        return journal_id

    async def ledger_totals(self) -> LedgerTotals:
        by_currency = {
            r[0]: int(r[1])
            for r in await self._all(
                "SELECT currency, SUM(amount)::bigint FROM postings GROUP BY 1"
            )
        }
        unbalanced = [
            r[0]
            for r in await self._all(
                "SELECT journal_id FROM postings GROUP BY journal_id, currency "
                "HAVING SUM(amount) != 0 ORDER BY journal_id"
            )
        ]
        drifted = [
            (r[0], int(r[1]), int(r[2]))
            for r in await self._all(
                "SELECT a.code, a.balance, COALESCE(SUM(p.amount), 0)::bigint "
                "FROM accounts a LEFT JOIN postings p ON p.account = a.code "
                "GROUP BY a.code, a.balance HAVING a.balance != COALESCE(SUM(p.amount), 0) "
                "ORDER BY a.code"
            )
        ]
        overdrawn = [
            (r[0], int(r[1]))
            for r in await self._all(
                "SELECT code, normal FROM (SELECT code, no_overdraft, CASE WHEN type = "
                "ANY($1::text[]) THEN -balance ELSE balance END AS normal FROM accounts) a "
                "WHERE no_overdraft AND normal < 0 ORDER BY code",
                _CREDIT_NORMAL,
            )
        ]
        counts = await self._one(
            "SELECT (SELECT COUNT(*) FROM journal), (SELECT COUNT(*) FROM postings), "
            "(SELECT COUNT(*) FROM accounts)"
        )
        assert counts is not None
        return LedgerTotals(
            by_currency, unbalanced, drifted, overdrawn, counts[0], counts[1], counts[2]
        )

    async def account_flow(self, code: str, since: float) -> int:
        value = await self._value(
            "SELECT COALESCE(SUM(p.amount), 0)::bigint FROM postings p "
            "JOIN journal j ON j.id = p.journal_id WHERE p.account = $1 AND j.created_at >= $2",
            code,
            since,
        )
        return int(value)
