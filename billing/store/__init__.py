"""Storage: one async interface for the ledger, invoices, tasks, accounts and the event outbox.

Everything that must change together happens inside one :meth:`Store.transaction`: a task's state
change, the ledger entry it causes and the outbox event that announces it commit together or not
at all. Writers are serialized (SQLite: one writer and ``BEGIN IMMEDIATE``; PostgreSQL: a
transaction-level advisory lock every writer takes first, across processes), which is what makes
balance checks and reservations atomic.

Laid out by concept: the rows in :mod:`.rows`, one narrow protocol per concept in
:mod:`.contracts` (``Tx`` is their union), and each engine a package with one module per concept
(:mod:`.sqlite`, :mod:`.postgres`). The interface speaks in rows and small verbs, never SQL, so
the engines stand side by side without the callers knowing which one they use.
"""

from __future__ import annotations

from .contracts import (
    INVOICE_CLAIM,
    PAYOUT_CLAIM,
    AuditRecord,
    AuditTx,
    BenchRecord,
    BenchTx,
    BudgetsTx,
    ClaimsTx,
    DeliveriesTx,
    InvoicesTx,
    KeysTx,
    LeasesTx,
    LedgerTx,
    NotifyTx,
    OutboxTx,
    PayoutsTx,
    Store,
    StoreError,
    TasksTx,
    TopupsTx,
    Tx,
)
from .rows import (
    AccountRow,
    DeliveryRow,
    EntryStart,
    EventRow,
    InvoiceRow,
    JournalRow,
    LedgerTotals,
    PayoutRow,
    PostingRow,
    TaskRow,
    TopupRow,
)

__all__ = [
    "INVOICE_CLAIM",
    "PAYOUT_CLAIM",
    "AccountRow",
    "AuditRecord",
    "AuditTx",
    "BenchRecord",
    "BenchTx",
    "BudgetsTx",
    "ClaimsTx",
    "DeliveriesTx",
    "DeliveryRow",
    "EntryStart",
    "EventRow",
    "InvoiceRow",
    "InvoicesTx",
    "JournalRow",
    "KeysTx",
    "LeasesTx",
    "LedgerTotals",
    "LedgerTx",
    "NotifyTx",
    "OutboxTx",
    "PayoutRow",
    "PayoutsTx",
    "PostingRow",
    "Store",
    "StoreError",
    "TaskRow",
    "TasksTx",
    "TopupRow",
    "TopupsTx",
    "Tx",
    "open_store",
]


async def open_store(url: str) -> Store:
    """Open (and migrate) the database named by ``SATROUTER_DATABASE_URL``."""
    if url.startswith("sqlite:///") or url == "sqlite://:memory:":
        from .sqlite import SqliteStore

        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ":memory:"
        return await SqliteStore.open(path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:  # asyncpg is the optional [postgres] extra
            raise StoreError(
                "a postgresql:// database needs the PostgreSQL driver: "
                "pip install 'satrouter[postgres]'"
            ) from exc
        return await PostgresStore.open(url)
    raise StoreError(
        f"unsupported database URL {url.split(':', 1)[0]}:... "
        "(use sqlite:///path or postgresql://user@host/database)"
    )
