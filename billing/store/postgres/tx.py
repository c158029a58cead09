"""The PostgreSQL transaction: every concept's mixin on one connection. Contract: ``Tx``."""

from __future__ import annotations

from .audit import PostgresAudit
from .bench import PostgresBench
from .budgets import PostgresBudgets
from .claims import PostgresClaims
from .deliveries import PostgresDeliveries
from .invoices import PostgresInvoices
from .keys import PostgresKeys
from .leases import PostgresLeases
from .ledger import PostgresLedger
from .notify import PostgresNotify
from .outbox import PostgresOutbox
from .payouts import PostgresPayouts
from .tasks import PostgresTasks
from .topups import PostgresTopups


class PostgresTx(
    PostgresLedger,
    PostgresInvoices,
    PostgresOutbox,
    PostgresDeliveries,
    PostgresTasks,
    PostgresLeases,
    PostgresBudgets,
    PostgresTopups,
    PostgresPayouts,
    PostgresAudit,
    PostgresKeys,
    PostgresBench,
    PostgresNotify,
    PostgresClaims,
):
    """One transaction or read snapshot on PostgreSQL."""
