"""Storage: one async interface for the ledger, invoices, tasks, accounts and the event outbox.

Everything that must change together happens inside one :meth:`Store.transaction`: a task's state
change, the ledger entry it causes and the outbox event that announces it commit together or not
at all. Writers are serialized (SQLite: one writer and ``BEGIN IMMEDIATE``; PostgreSQL: row locks),
which is what makes balance checks and reservations atomic.

The interface speaks in rows (plain dataclasses) and small verbs, never SQL, so that a PostgreSQL
engine can stand beside :mod:`billing.store.sqlite` without touching the callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


class StoreError(Exception):
    """The database refused an operation (constraint, unknown engine, bad URL)."""


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
    """What :meth:`Tx.ledger_totals` reads for the ledger check."""

    by_currency: dict[str, int]  # sum of all postings per currency: must be 0
    unbalanced_entries: list[int]  # journal ids whose postings do not sum to 0 per currency
    drifted_accounts: list[tuple[str, int, int]]  # (code, stored balance, sum of postings)
    overdrawn: list[tuple[str, int]]  # (code, normal-side balance < 0) of no-overdraft accounts
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Tx(Protocol):
    """The verbs available inside one transaction (or one read snapshot)."""

    # ledger
    async def ensure_accounts(
        self, accounts: Sequence[tuple[str, str, str, bool]], now: float
    ) -> None:
        """Create the (code, currency, type, no_overdraft) accounts that do not exist yet."""

    async def account(self, code: str) -> AccountRow | None: ...
    async def accounts(self, prefix: str = "") -> list[AccountRow]: ...
    async def journal_by_key(self, idempotency_key: str) -> JournalRow | None: ...
    async def journal_by_ref(self, ref: str) -> list[JournalRow]: ...
    async def insert_journal(
        self,
        idempotency_key: str,
        kind: str,
        ref: str | None,
        memo: str | None,
        digest: str,
        postings: Sequence[PostingRow],
        now: float,
    ) -> int: ...
    async def ledger_totals(self) -> LedgerTotals: ...
    async def account_flow(self, code: str, since: float) -> int:
        """The sum of ``code``'s postings in entries made since ``since`` (debits positive)."""

    # invoices
    async def insert_invoice(self, invoice: InvoiceRow) -> None: ...
    async def invoice(self, payment_hash: str) -> InvoiceRow | None: ...
    async def open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        """Open invoices not yet expired at ``now``, soonest expiry first."""

    async def expired_open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        """Open invoices whose expiry has passed, the longest expired first."""

    async def count_open_invoices(self) -> int: ...
    async def expired_invoices(self, before: float, limit: int) -> list[InvoiceRow]:
        """Invoices marked expired (never paid) that expired before ``before``."""

    async def delete_unpaid(self, invoice: InvoiceRow, root_key_id: str | None) -> None:
        """Forget an expired, unpaid invoice: its row, an expired task it was for (with the
        task's events and deliveries), and an L402 challenge's root key."""

    async def set_invoice_status(
        self, payment_hash: str, status: str, settled_at: float | None
    ) -> bool:
        """Move an open invoice to ``status`` (an expired one only to ``settled``)."""

    # outbox
    async def append_event(
        self, topic: str, key: str, payload: dict[str, Any], now: float
    ) -> int: ...
    async def events_after(self, position: int, limit: int = 100) -> list[EventRow]: ...
    async def events_for(self, key: str) -> list[EventRow]: ...
    async def last_event_id(self) -> int: ...
    async def cursor(self, consumer: str) -> int: ...
    async def set_cursor(self, consumer: str, position: int) -> None: ...

    # callback deliveries
    async def insert_delivery(
        self, event_id: int, task_id: str, destination: str, state: str, now: float
    ) -> None: ...
    async def pending_destinations(self, limit: int) -> list[str]:
        """Destinations with deliveries still to send, oldest first."""

    async def pending_deliveries(self, destination: str, limit: int) -> list[DeliveryRow]:
        """The destination's deliveries still to send, in event order."""

    async def count_pending_deliveries(self, destination: str) -> int: ...
    async def finish_delivery(
        self, delivery_id: int, *, delivered: bool, attempts: int, error: str | None, now: float
    ) -> None:
        """Delivered: the row goes; given up: it stays as ``failed`` with its error."""

    # tasks
    async def insert_task(self, task: TaskRow) -> None: ...
    async def task(self, task_id: str) -> TaskRow | None: ...
    async def update_task(
        self,
        task_id: str,
        *,
        state: str,
        data: dict[str, Any],
        expected_state: str,
        now: float,
    ) -> bool: ...
    async def tasks_in_states(self, states: Sequence[str]) -> list[TaskRow]: ...
    async def tasks_updated_between(
        self, since: float | None, until: float | None, states: Sequence[str]
    ) -> list[TaskRow]:
        """Tasks in ``states`` last changed in ``[since, until)`` (None: unbounded)."""

    # budgets
    async def budget_usage(self, scope: str, period: str) -> tuple[int, int]:
        """(spent msat, spent nano-USD) of ``scope`` in ``period``."""

    async def add_budget_usage(self, scope: str, period: str, msat: int, nusd: int) -> None: ...

    # model benchmarks: rows are (run_id, at, model, prompt_id, ttft_ms, latency_ms,
    # prompt_tokens, completion_tokens, cost_nusd, score, error)
    async def insert_bench_results(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    async def bench_results(self, model: str) -> list[tuple[Any, ...]]:
        """Every stored result for ``model``, oldest first."""

    # top-ups
    async def insert_topup(self, topup: TopupRow) -> None: ...
    async def update_topup(
        self, topup_id: str, *, state: str, data: dict[str, Any], expected_state: str, now: float
    ) -> bool: ...
    async def topups(
        self, states: Sequence[str] | None = None, since: float | None = None
    ) -> list[TopupRow]: ...

    # payouts (outgoing payments)
    async def insert_payout(self, payout: PayoutRow) -> bool:
        """Insert a new payout; False if one to this payment hash exists already."""

    async def payout(self, payment_hash: str) -> PayoutRow | None: ...
    async def payouts_in_states(self, states: Sequence[str]) -> list[PayoutRow]: ...
    async def update_payout(self, payout: PayoutRow, *, expected_state: str) -> bool:
        """Write ``payout``'s state and outcome if it is still in ``expected_state``."""

    # audit trail
    async def audit_tail(self) -> tuple[int, str] | None:
        """(seq, hash) of the last audit entry."""

    async def insert_audit(
        self, seq: int, at: float, kind: str, data: str, prev_hash: str, digest: str
    ) -> None: ...
    async def audit_after(
        self, seq: int, limit: int
    ) -> list[tuple[int, float, str, str, str, str]]:
        """(seq, at, kind, data, prev_hash, hash) of the entries after ``seq``."""

    # API accounts, L402 root keys, small values
    async def insert_api_account(self, account_id: str, key_hash: str, now: float) -> None: ...
    async def api_account_by_key_hash(self, key_hash: str) -> str | None: ...
    async def put_root_key(self, id_hash: str, root_key: bytes, now: float) -> None: ...
    async def root_key(self, id_hash: str) -> bytes | None: ...
    async def get_value(self, key: str) -> str | None: ...
    async def set_value(self, key: str, value: str) -> None: ...


class Store(Protocol):
    """A database: serialized write transactions and consistent read snapshots."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...
    def read(self) -> AbstractAsyncContextManager[Tx]: ...
    async def close(self) -> None: ...


async def open_store(url: str) -> Store:
    """Open (and migrate) the database named by ``SATROUTER_DATABASE_URL``."""
    if url.startswith("sqlite:///") or url == "sqlite://:memory:":
        from .sqlite import SqliteStore

        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ":memory:"
        return await SqliteStore.open(path)
    raise StoreError(f"unsupported database URL {url.split(':', 1)[0]}:... (use sqlite:///path)")
