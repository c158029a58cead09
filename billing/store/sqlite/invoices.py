"""Invoices on SQLite. Contract: ``InvoicesTx``."""

from __future__ import annotations

from ..rows import InvoiceRow
from .base import SqliteBase


class SqliteInvoices(SqliteBase):
    async def insert_invoice(self, invoice: InvoiceRow) -> None:
        self._run(
            "INSERT INTO invoices (payment_hash, bolt11, amount_msat, purpose, ref, status, "
            "created_at, expires_at, settled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                invoice.payment_hash,
                invoice.bolt11,
                invoice.amount_msat,
                invoice.purpose,
                invoice.ref,
                invoice.status,
                invoice.created_at,
                invoice.expires_at,
                invoice.settled_at,
            ),
        )

    _INVOICE_COLUMNS = (
        "payment_hash, bolt11, amount_msat, purpose, ref, status, created_at, expires_at, "
        "settled_at"
    )

    async def invoice(self, payment_hash: str) -> InvoiceRow | None:
        row = self._one(
            f"SELECT {self._INVOICE_COLUMNS} FROM invoices WHERE payment_hash = ?",
            (payment_hash,),
        )
        return InvoiceRow(*row) if row else None

    async def open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        rows = self._all(
            f"SELECT {self._INVOICE_COLUMNS} FROM invoices WHERE status = 'open' "
            "AND expires_at > ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [InvoiceRow(*r) for r in rows]

    async def expired_open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        rows = self._all(
            f"SELECT {self._INVOICE_COLUMNS} FROM invoices WHERE status = 'open' "
            "AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [InvoiceRow(*r) for r in rows]

    async def count_open_invoices(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM invoices WHERE status = 'open'")[0])

    async def expired_invoices(self, before: float, limit: int) -> list[InvoiceRow]:
        rows = self._all(
            f"SELECT {self._INVOICE_COLUMNS} FROM invoices WHERE status = 'expired' "
            "AND expires_at < ? ORDER BY expires_at LIMIT ?",
            (before, limit),
        )
        return [InvoiceRow(*r) for r in rows]

    async def delete_unpaid(self, invoice: InvoiceRow, root_key_id: str | None) -> None:
        self._run(
            "DELETE FROM invoices WHERE payment_hash = ? AND status = 'expired'",
            (invoice.payment_hash,),
        )
        if invoice.purpose == "task" and self._run(
            "DELETE FROM tasks WHERE id = ? AND state = 'expired'", (invoice.ref,)
        ):
            self._run("DELETE FROM outbox WHERE key = ?", (invoice.ref,))
            self._run("DELETE FROM deliveries WHERE task_id = ?", (invoice.ref,))
        if root_key_id is not None:
            self._run("DELETE FROM l402_root_keys WHERE id_hash = ?", (root_key_id,))

    async def set_invoice_status(
        self, payment_hash: str, status: str, settled_at: float | None
    ) -> bool:
        # A settlement also replaces "expired": money that arrived must never be ignored.
        changed = self._run(
            "UPDATE invoices SET status = ?, settled_at = ? WHERE payment_hash = ? "
            "AND (status = 'open' OR (status = 'expired' AND ? = 'settled'))",
            (status, settled_at, payment_hash, status),
        )
        return changed == 1
