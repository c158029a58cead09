"""The rows the store reads and writes: plain frozen dataclasses, the same for every engine.

Amounts are integers (msat; nano-USD where named). JSON columns come back as dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AccountRow:
    code: str
    currency: str
    type: str
    no_overdraft: bool
    balance: int  # debits minus credits


@dataclass(frozen=True, slots=True)
class PostingRow:
    account: str
    currency: str
    amount: int  # debit > 0, credit < 0


@dataclass(frozen=True, slots=True)
class JournalRow:
    id: int
    idempotency_key: str
    kind: str
    ref: str | None
    memo: str | None
    digest: str
    created_at: float
    postings: tuple[PostingRow, ...]


@dataclass(frozen=True, slots=True)
class EntryStart:
    """What posting an entry reads before it writes (:meth:`LedgerTx.start_entry`)."""

    posted_digest: str | None  # the digest of the entry already posted under the key, if any
    balances: dict[str, int]  # stored balance of each account named (0 for a new one)
    audit_tail: tuple[int, str] | None  # (seq, hash) of the audit trail's last entry


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    payment_hash: str
    bolt11: str
    amount_msat: int
    purpose: str
    ref: str
    status: str  # open | settled | expired | cancelled
    created_at: float
    expires_at: float
    settled_at: float | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One callback to send: the event, its task and where it goes."""

    id: int
    event_id: int
    task_id: str
    destination: str
    attempts: int


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    state: str
    agent: str | None
    data: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class TopupRow:
    id: str
    state: str
    amount_msat: int
    usd_nusd: int
    data: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class PayoutRow:
    payment_hash: str
    ref: str
    agent: str
    bolt11: str
    amount_msat: int
    fee_limit_msat: int
    state: str  # reserved | in_flight | succeeded | failed (see billing/payouts.py)
    created_at: float
    updated_at: float
    attempted_at: float | None = None
    fee_msat: int | None = None
    preimage: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """What :meth:`LedgerTx.ledger_totals` reads for the ledger check."""

    by_currency: dict[str, int]  # sum of all postings per currency: must be 0
    unbalanced_entries: list[int]  # journal ids whose postings do not sum to 0 per currency
    drifted_accounts: list[tuple[str, int, int]]  # (code, stored balance, sum of postings)
    overdrawn: list[tuple[str, int]]  # (code, normal-side balance < 0) of no-overdraft accounts
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
