"""The SQLite transaction: every concept's mixin on one connection. Contract: ``Tx``."""

from __future__ import annotations

from .audit import SqliteAudit
from .bench import SqliteBench
from .budgets import SqliteBudgets
from .claims import SqliteClaims
from .deliveries import SqliteDeliveries
from .invoices import SqliteInvoices
from .keys import SqliteKeys
from .leases import SqliteLeases
from .ledger import SqliteLedger
from .notify import SqliteNotify
from .outbox import SqliteOutbox
from .payouts import SqlitePayouts
from .tasks import SqliteTasks
from .topups import SqliteTopups


class SqliteTx(
    SqliteLedger,
    SqliteInvoices,
    SqliteOutbox,
    SqliteDeliveries,
    SqliteTasks,
    SqliteLeases,
    SqliteBudgets,
    SqliteTopups,
    SqlitePayouts,
    SqliteAudit,
    SqliteKeys,
    SqliteBench,
    SqliteNotify,
    SqliteClaims,
):
    """One transaction or read snapshot on SQLite."""
