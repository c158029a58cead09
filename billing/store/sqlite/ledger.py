"""Accounts, journal entries and postings on SQLite. Contract: ``LedgerTx``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..rows import AccountRow, EntryStart, JournalRow, LedgerTotals, PostingRow
from .base import SqliteBase

# Account types whose normal side is the credit side: their normal balance is -balance.
_CREDIT_NORMAL = ("liability", "income", "equity")


class SqliteLedger(SqliteBase):
    async def ensure_accounts(
        self, accounts: Sequence[tuple[str, str, str, bool]], now: float
    ) -> None:
        self._many(
            "INSERT INTO accounts (code, currency, type, no_overdraft, balance, created_at) "
            "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (code) DO NOTHING",
            [(code, currency, kind, int(flag), now) for code, currency, kind, flag in accounts],
        )

    async def account(self, code: str) -> AccountRow | None:
        row = self._one(
            "SELECT code, currency, type, no_overdraft, balance FROM accounts WHERE code = ?",
            (code,),
        )
        return AccountRow(row[0], row[1], row[2], bool(row[3]), row[4]) if row else None

    async def accounts(self, prefix: str = "") -> list[AccountRow]:
        rows = self._all(
            "SELECT code, currency, type, no_overdraft, balance FROM accounts "
            "WHERE code >= ? AND code < ? ORDER BY code",
            (prefix, prefix + "\uffff"),
        )
        return [AccountRow(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def _journal(self, where: str, params: Sequence[Any]) -> list[JournalRow]:
        rows = self._all(
            "SELECT id, idempotency_key, kind, ref, memo, digest, created_at FROM journal "
            f"WHERE {where} ORDER BY id",
            params,
        )
        out = []
        for r in rows:
            postings = self._all(
                "SELECT account, currency, amount FROM postings WHERE journal_id = ? "
                "ORDER BY rowid",
                (r[0],),
            )
            out.append(
                JournalRow(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    tuple(PostingRow(p[0], p[1], p[2]) for p in postings),
                )
            )
        return out

    async def journal_by_key(self, idempotency_key: str) -> JournalRow | None:
        rows = self._journal("idempotency_key = ?", (idempotency_key,))
        return rows[0] if rows else None

    async def journal_by_ref(self, ref: str) -> list[JournalRow]:
        return self._journal("ref = ?", (ref,))

    async def start_entry(
        self,
        idempotency_key: str,
        accounts: Sequence[tuple[str, str, str, bool]],
        now: float,
    ) -> EntryStart:
        # Calls into the same process: no round trips to save.
        posted = self._one(
            "SELECT digest FROM journal WHERE idempotency_key = ?", (idempotency_key,)
        )
        await self.ensure_accounts(accounts, now)
        balances: dict[str, int] = {}
        for code, _, _, _ in accounts:
            row = self._one("SELECT balance FROM accounts WHERE code = ?", (code,))
            balances[code] = int(row[0]) if row else 0
        tail = self._one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return EntryStart(
            posted[0] if posted else None,
            balances,
            (int(tail[0]), str(tail[1])) if tail else None,
        )

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
        journal_id = self._insert(
            "INSERT INTO journal (idempotency_key, kind, ref, memo, digest, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (idempotency_key, kind, ref, memo, digest, now),
        )
        self._many(
            "INSERT INTO postings (journal_id, account, currency, amount) VALUES (?, ?, ?, ?)",
            [(journal_id, p.account, p.currency, p.amount) for p in postings],
        )
        self._many(
            "UPDATE accounts SET balance = balance + ? WHERE code = ?",
            [(p.amount, p.account) for p in postings],
        )
        return journal_id

    async def ledger_totals(self) -> LedgerTotals:
        by_currency = {
            r[0]: r[1] for r in self._all("SELECT currency, SUM(amount) FROM postings GROUP BY 1")
        }
        unbalanced = [
            r[0]
            for r in self._all(
                "SELECT journal_id FROM postings GROUP BY journal_id, currency "
                "HAVING SUM(amount) != 0"
            )
        ]
        drifted = [
            (r[0], r[1], r[2])
            for r in self._all(
                "SELECT a.code, a.balance, COALESCE(SUM(p.amount), 0) AS derived "
                "FROM accounts a LEFT JOIN postings p ON p.account = a.code "
                "GROUP BY a.code HAVING a.balance != derived"
            )
        ]
        overdrawn = [
            (r[0], r[1])
            for r in self._all(
                "SELECT code, CASE WHEN type IN (?, ?, ?) THEN -balance ELSE balance END AS normal "
                "FROM accounts WHERE no_overdraft = 1 AND normal < 0",
                _CREDIT_NORMAL,
            )
        ]
        counts = self._one(
            "SELECT (SELECT COUNT(*) FROM journal), (SELECT COUNT(*) FROM postings), "
            "(SELECT COUNT(*) FROM accounts)"
        )
        return LedgerTotals(
            by_currency, unbalanced, drifted, overdrawn, counts[0], counts[1], counts[2]
        )

    async def account_flow(self, code: str, since: float) -> int:
        row = self._one(
            "SELECT COALESCE(SUM(p.amount), 0) FROM postings p "
            "JOIN journal j ON j.id = p.journal_id WHERE p.account = ? AND j.created_at >= ?",
            (code, since),
        )
        return int(row[0])
