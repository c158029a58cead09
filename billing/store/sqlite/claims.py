"""Claiming queued work on SQLite: one process, one writer at a time, so a plain select
followed by the leases' compare-and-set. Contract: ``ClaimsTx``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..contracts import INVOICE_CLAIM, OPEN_PAYOUTS, PAYOUT_CLAIM
from ..rows import InvoiceRow, PayoutRow, TaskRow
from .base import SqliteBase
from .invoices import SqliteInvoices
from .payouts import SqlitePayouts

# Unclaimed, claimed by the claimant itself (renewed), or under a claim that expired.
_OPEN_MARKS = ",".join("?" * len(OPEN_PAYOUTS))
_FREE = "(c.key IS NULL OR c.owner = ? OR c.expires_at < ?)"


class SqliteClaims(SqliteBase):
    async def claim_tasks(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._all(
            "SELECT t.id, t.state, t.agent, t.data, t.created_at, t.updated_at FROM tasks t "
            "LEFT JOIN leases l ON l.task_id = t.id "
            f"WHERE t.state IN ({marks}) AND (l.task_id IS NULL OR l.expires_at < ?) "
            "ORDER BY t.created_at LIMIT ?",
            (*states, now, limit),
        )
        self._many(
            "INSERT INTO leases (task_id, owner, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at",
            [(r[0], owner, expires_at) for r in rows],
        )
        return [TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    async def claim_expired_invoices(
        self, owner: str, expires_at: float, now: float, limit: int
    ) -> list[InvoiceRow]:
        columns = ", ".join(f"i.{c.strip()}" for c in SqliteInvoices._INVOICE_COLUMNS.split(","))
        rows = self._all(
            f"SELECT {columns} FROM invoices i "
            "LEFT JOIN claims c ON c.kind = ? AND c.key = i.payment_hash "
            f"WHERE i.status = 'open' AND i.expires_at <= ? AND {_FREE} "
            "ORDER BY i.expires_at, i.payment_hash LIMIT ?",
            (INVOICE_CLAIM, now, owner, now, limit),
        )
        self._take(INVOICE_CLAIM, [r[0] for r in rows], owner, expires_at)
        return [InvoiceRow(*r) for r in rows]

    async def claim_payouts(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[PayoutRow]:
        columns = ", ".join(f"p.{c.strip()}" for c in SqlitePayouts._PAYOUT_COLUMNS.split(","))
        rows = self._all(
            f"SELECT {columns} FROM payouts p "
            "LEFT JOIN claims c ON c.kind = ? AND c.key = p.payment_hash "
            f"WHERE p.state IN ({','.join('?' * len(states))}) AND {_FREE} "
            "ORDER BY p.created_at LIMIT ?",
            (PAYOUT_CLAIM, *states, owner, now, limit),
        )
        self._take(PAYOUT_CLAIM, [r[0] for r in rows], owner, expires_at)
        return [PayoutRow(*r) for r in rows]

    async def renew_claims(self, owner: str, expires_at: float, now: float) -> int:
        self._run(
            "DELETE FROM claims WHERE (expires_at < ? AND owner <> ?)"
            " OR (kind = ? AND NOT EXISTS (SELECT 1 FROM invoices i"
            "  WHERE i.payment_hash = claims.key AND i.status = 'open'))"
            " OR (kind = ? AND NOT EXISTS (SELECT 1 FROM payouts p"
            f"  WHERE p.payment_hash = claims.key AND p.state IN ({_OPEN_MARKS})))",
            (now, owner, INVOICE_CLAIM, PAYOUT_CLAIM, *OPEN_PAYOUTS),
        )
        return self._run("UPDATE claims SET expires_at = ? WHERE owner = ?", (expires_at, owner))

    async def drop_claim(self, kind: str, key: str, owner: str) -> None:
        self._run("DELETE FROM claims WHERE kind = ? AND key = ? AND owner = ?", (kind, key, owner))

    def _take(self, kind: str, keys: list[str], owner: str, expires_at: float) -> None:
        self._many(
            "INSERT INTO claims (kind, key, owner, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at",
            [(kind, key, owner, expires_at) for key in keys],
        )
