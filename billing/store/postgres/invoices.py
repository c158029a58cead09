"""Invoices on PostgreSQL. Contract: ``InvoicesTx``."""

from __future__ import annotations

from ..rows import InvoiceRow
from .base import PostgresBase

_COLUMNS = (
    "payment_hash, bolt11, amount_msat, purpose, ref, status, created_at, expires_at, settled_at"
)


class PostgresInvoices(PostgresBase):
    async def insert_invoice(self, invoice: InvoiceRow) -> None:
        await self._run(
            f"INSERT INTO invoices ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            invoice.payment_hash,
            invoice.bolt11,
            invoice.amount_msat,
            invoice.purpose,
            invoice.ref,
            invoice.status,
            invoice.created_at,
            invoice.expires_at,
            invoice.settled_at,
        )

    async def invoice(self, payment_hash: str) -> InvoiceRow | None:
        row = await self._one(
            f"SELECT {_COLUMNS} FROM invoices WHERE payment_hash = $1", payment_hash
        )
        return InvoiceRow(*row) if row else None

    async def open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM invoices WHERE status = 'open' AND expires_at > $1 "
            "ORDER BY expires_at, payment_hash LIMIT $2",
            now,
            limit,
        )
        return [InvoiceRow(*r) for r in rows]

    async def expired_open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM invoices WHERE status = 'open' AND expires_at <= $1 "
            "ORDER BY expires_at, payment_hash LIMIT $2",
            now,
            limit,
        )
        return [InvoiceRow(*r) for r in rows]

    async def count_open_invoices(self) -> int:
        return int(await self._value("SELECT COUNT(*) FROM invoices WHERE status = 'open'"))

    async def expired_invoices(self, before: float, limit: int) -> list[InvoiceRow]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM invoices WHERE status = 'expired' AND expires_at < $1 "
            "ORDER BY expires_at, payment_hash LIMIT $2",
            before,
            limit,
        )
        return [InvoiceRow(*r) for r in rows]

    async def delete_unpaid(self, invoice: InvoiceRow, root_key_id: str | None) -> None:
        await self._run(
            "DELETE FROM invoices WHERE payment_hash = $1 AND status = 'expired'",
            invoice.payment_hash,
        )
        if invoice.purpose == "task" and await self._run(
            "DELETE FROM tasks WHERE id = $1 AND state = 'expired'", invoice.ref
        ):
            await self._run("DELETE FROM outbox WHERE key = $1", invoice.ref)
            await self._run("DELETE FROM deliveries WHERE task_id = $1", invoice.ref)
        if root_key_id is not None:
            await self._run("DELETE FROM l402_root_keys WHERE id_hash = $1", root_key_id)

    async def set_invoice_status(
        self, payment_hash: str, status: str, settled_at: float | None
    ) -> bool:
        # A settlement also replaces "expired": money that arrived must never be ignored.
        changed = await self._run(
            "UPDATE invoices SET status = $1::text, settled_at = $2 WHERE payment_hash = $3 "
            "AND (status = 'open' OR (status = 'expired' AND $1::text = 'settled'))",
            status,
            settled_at,
            payment_hash,
        )
        return changed == 1
