"""Claiming queued work on PostgreSQL: ``FOR UPDATE SKIP LOCKED``. Contract: ``ClaimsTx``."""

from __future__ import annotations

from collections.abc import Sequence

from ..contracts import INVOICE_CLAIM, OPEN_PAYOUTS, PAYOUT_CLAIM
from ..rows import InvoiceRow, PayoutRow, TaskRow
from .base import PostgresBase
from .invoices import _COLUMNS as _INVOICE_COLUMNS
from .payouts import _COLUMNS as _PAYOUT_COLUMNS
from .tasks import _task

# Take the picked rows' claims: new ones, expired ones and the claimant's own (renewed); a
# claim another holds is left alone, so a row picked on a stale view is not returned.
_TAKE = (
    "INSERT INTO claims (kind, key, owner, expires_at) SELECT $1, key, $2, $3 FROM picked"
    " ON CONFLICT (kind, key) DO UPDATE SET owner = excluded.owner,"
    " expires_at = excluded.expires_at"
    " WHERE claims.owner = excluded.owner OR claims.expires_at < $4 RETURNING key"
)
_FREE = "(c.key IS NULL OR c.owner = $2 OR c.expires_at < $4)"


class PostgresClaims(PostgresBase):
    async def claim_tasks(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[TaskRow]:
        # SKIP LOCKED: a transaction claiming at the same time passes over the rows this one
        # is claiming instead of waiting for them (writers hold WRITE_LOCK as well today, so
        # none overlap; the claim stays right without it). The lease is the claim that lasts.
        rows = await self._all(
            "WITH picked AS ("
            " SELECT t.id FROM tasks t LEFT JOIN leases l ON l.task_id = t.id"
            " WHERE t.state = ANY($1::text[]) AND (l.task_id IS NULL OR l.expires_at < $4)"
            " ORDER BY t.created_at, t.seq LIMIT $5 FOR UPDATE OF t SKIP LOCKED"
            "), claimed AS ("
            " INSERT INTO leases (task_id, owner, expires_at) SELECT id, $2, $3 FROM picked"
            " ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at WHERE leases.expires_at < $4"
            " RETURNING task_id"
            ") SELECT t.id, t.state, t.agent, t.data, t.created_at, t.updated_at"
            " FROM tasks t JOIN claimed c ON c.task_id = t.id ORDER BY t.created_at, t.seq",
            list(states),
            owner,
            expires_at,
            now,
            limit,
        )
        return [_task(r) for r in rows]

    async def claim_expired_invoices(
        self, owner: str, expires_at: float, now: float, limit: int
    ) -> list[InvoiceRow]:
        columns = ", ".join(f"i.{c.strip()}" for c in _INVOICE_COLUMNS.split(","))
        rows = await self._all(
            "WITH picked AS ("
            " SELECT i.payment_hash AS key FROM invoices i"
            " LEFT JOIN claims c ON c.kind = $1 AND c.key = i.payment_hash"
            f" WHERE i.status = 'open' AND i.expires_at <= $4 AND {_FREE}"
            " ORDER BY i.expires_at, i.payment_hash LIMIT $5 FOR UPDATE OF i SKIP LOCKED"
            f"), claimed AS ({_TAKE})"
            f" SELECT {columns} FROM invoices i JOIN claimed c ON c.key = i.payment_hash"
            " ORDER BY i.expires_at, i.payment_hash",
            INVOICE_CLAIM,
            owner,
            expires_at,
            now,
            limit,
        )
        return [InvoiceRow(*r) for r in rows]

    async def claim_payouts(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[PayoutRow]:
        columns = ", ".join(f"p.{c.strip()}" for c in _PAYOUT_COLUMNS.split(","))
        rows = await self._all(
            "WITH picked AS ("
            " SELECT p.payment_hash AS key FROM payouts p"
            " LEFT JOIN claims c ON c.kind = $1 AND c.key = p.payment_hash"
            f" WHERE p.state = ANY($6::text[]) AND {_FREE}"
            " ORDER BY p.created_at, p.seq LIMIT $5 FOR UPDATE OF p SKIP LOCKED"
            f"), claimed AS ({_TAKE})"
            f" SELECT {columns} FROM payouts p JOIN claimed c ON c.key = p.payment_hash"
            " ORDER BY p.created_at, p.seq",
            PAYOUT_CLAIM,
            owner,
            expires_at,
            now,
            limit,
            list(states),
        )
        return [PayoutRow(*r) for r in rows]

    async def renew_claims(self, owner: str, expires_at: float, now: float) -> int:
        await self._run(
            "DELETE FROM claims c WHERE (c.expires_at < $1 AND c.owner <> $2)"
            " OR (c.kind = $3 AND NOT EXISTS (SELECT 1 FROM invoices i"
            "  WHERE i.payment_hash = c.key AND i.status = 'open'))"
            " OR (c.kind = $4 AND NOT EXISTS (SELECT 1 FROM payouts p"
            "  WHERE p.payment_hash = c.key AND p.state = ANY($5::text[])))",
            now,
            owner,
            INVOICE_CLAIM,
            PAYOUT_CLAIM,
            list(OPEN_PAYOUTS),
        )
        return await self._run(
            "UPDATE claims SET expires_at = $1 WHERE owner = $2", expires_at, owner
        )

    async def drop_claim(self, kind: str, key: str, owner: str) -> None:
        await self._run(
            "DELETE FROM claims WHERE kind = $1 AND key = $2 AND owner = $3", kind, key, owner
        )
