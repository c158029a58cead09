"""The store's contract, one narrow protocol per concept; :class:`Tx` is their union.

Every engine implements every protocol, and ``tests/store_contract/`` holds each engine to what
the docstrings here promise. All methods run inside the transaction (or read snapshot) that
handed out the ``Tx``: nothing is visible to other readers until the transaction commits, and
nothing is written if it raises. A write that breaks a uniqueness rule raises
:class:`StoreError`, never an engine's own exception. Callers that use one concept type their
``tx`` with that concept's protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

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

# (seq, at, kind, data as canonical JSON, prev_hash, hash)
AuditRecord = tuple[int, float, str, str, str, str]
# (run_id, at, model, prompt_id, ttft_ms, latency_ms, prompt_tokens, completion_tokens,
#  cost_nusd, score, error); (run_id, model, prompt_id) is unique
BenchRecord = tuple[Any, ...]


#: The kinds of row a sweep claims (``ClaimsTx``); the key is the row's payment hash.
INVOICE_CLAIM = "invoice"
PAYOUT_CLAIM = "payout"
#: The states of a payout still open (``billing.payouts.OPEN``): the ones a claim is kept on.
OPEN_PAYOUTS = ("reserved", "in_flight")


class StoreError(Exception):
    """The database refused an operation (constraint, unknown engine, bad URL)."""


class LedgerTx(Protocol):
    """Accounts, journal entries and their postings (``billing/ledger.py`` decides what)."""

    async def ensure_accounts(
        self, accounts: Sequence[tuple[str, str, str, bool]], now: float
    ) -> None:
        """Create the (code, currency, type, no_overdraft) accounts that do not exist yet;
        existing ones stay as they are."""

    async def account(self, code: str) -> AccountRow | None:
        """The account with its stored balance (debits minus credits), or None."""

    async def accounts(self, prefix: str = "") -> list[AccountRow]:
        """Every account whose code starts with ``prefix``, ordered by code."""

    async def journal_by_key(self, idempotency_key: str) -> JournalRow | None:
        """The entry posted under this key, its postings in the order given, or None."""

    async def start_entry(
        self,
        idempotency_key: str,
        accounts: Sequence[tuple[str, str, str, bool]],
        now: float,
    ) -> EntryStart:
        """All that posting an entry reads first, in one step (one round trip where the
        engine has them): the digest of an entry already posted under the key; the
        (code, currency, type, no_overdraft) accounts, created if missing, with their stored
        balances; and the audit trail's tail, which the posting extends."""

    async def journal_by_ref(self, ref: str) -> list[JournalRow]:
        """Every entry about ``ref``, in the order they were posted."""

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
        """Write the entry and its postings, and add each posting to its account's stored
        balance. Returns its id (ids increase). A used key raises :class:`StoreError`; no
        balance check here (the caller checks first, inside the same transaction)."""

    async def ledger_totals(self) -> LedgerTotals:
        """Sums for the ledger check, recomputed from the postings themselves."""

    async def account_flow(self, code: str, since: float) -> int:
        """The sum of ``code``'s postings in entries made since ``since`` (debits positive)."""


class InvoicesTx(Protocol):
    """Incoming Lightning invoices and their status."""

    async def insert_invoice(self, invoice: InvoiceRow) -> None:
        """Store a new invoice; a payment hash seen before raises :class:`StoreError`."""

    async def invoice(self, payment_hash: str) -> InvoiceRow | None: ...

    async def open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        """At most ``limit`` open invoices not yet expired at ``now``, soonest expiry first."""

    async def expired_open_invoices(self, now: float, limit: int) -> list[InvoiceRow]:
        """At most ``limit`` open invoices whose expiry has passed, the longest expired first."""

    async def count_open_invoices(self) -> int:
        """How many invoices are open, expired or not."""

    async def expired_invoices(self, before: float, limit: int) -> list[InvoiceRow]:
        """At most ``limit`` invoices marked expired (never paid) whose expiry is before
        ``before``, the longest expired first."""

    async def delete_unpaid(self, invoice: InvoiceRow, root_key_id: str | None) -> None:
        """Forget an expired, unpaid invoice: its row (only while still ``expired``), the
        task it was for if that task is ``expired`` (with the task's events and deliveries),
        and an L402 challenge's root key."""

    async def set_invoice_status(
        self, payment_hash: str, status: str, settled_at: float | None
    ) -> bool:
        """Move an open invoice to ``status``, or an expired one to ``settled`` (money that
        arrived is never ignored). False, changing nothing, from any other status."""


class OutboxTx(Protocol):
    """The event outbox and its consumers' cursors."""

    async def append_event(self, topic: str, key: str, payload: dict[str, Any], now: float) -> int:
        """Append an event; its id is greater than every id before it."""

    async def events_after(self, position: int, limit: int = 100) -> list[EventRow]:
        """At most ``limit`` events with an id above ``position``, in id order."""

    async def events_for(self, key: str) -> list[EventRow]:
        """Every event about ``key``, in id order."""

    async def last_event_id(self) -> int:
        """The highest event id, 0 when there is none."""

    async def cursor(self, consumer: str) -> int:
        """Where ``consumer`` stopped reading, 0 for a new one."""

    async def set_cursor(self, consumer: str, position: int) -> None: ...


class DeliveriesTx(Protocol):
    """Callbacks to send: one row per event and destination."""

    async def insert_delivery(
        self, event_id: int, task_id: str, destination: str, state: str, now: float
    ) -> None:
        """Queue a delivery (``state`` ``pending`` to be sent) with no attempts yet."""

    async def pending_destinations(self, limit: int) -> list[str]:
        """At most ``limit`` destinations with pending deliveries, the one waiting longest
        first."""

    async def pending_deliveries(self, destination: str, limit: int) -> list[DeliveryRow]:
        """At most ``limit`` of the destination's pending deliveries, in the order queued."""

    async def count_pending_deliveries(self, destination: str) -> int: ...

    async def finish_delivery(
        self, delivery_id: int, *, delivered: bool, attempts: int, error: str | None, now: float
    ) -> None:
        """Delivered: the row goes; given up: it stays as ``failed`` with its error and is no
        longer pending."""


class TasksTx(Protocol):
    """Tasks: a state and a JSON document each."""

    async def insert_task(self, task: TaskRow) -> None:
        """Store a new task; an id seen before raises :class:`StoreError`."""

    async def task(self, task_id: str) -> TaskRow | None: ...

    async def update_task(
        self,
        task_id: str,
        *,
        state: str,
        data: dict[str, Any],
        expected_state: str,
        now: float,
    ) -> bool:
        """Compare-and-set: write state, data and ``updated_at`` only if the task is in
        ``expected_state``. False, changing nothing, otherwise."""

    async def tasks_in_states(self, states: Sequence[str]) -> list[TaskRow]:
        """Every task in one of ``states``, oldest first."""

    async def tasks_updated_between(
        self, since: float | None, until: float | None, states: Sequence[str]
    ) -> list[TaskRow]:
        """Tasks in ``states`` last changed in ``[since, until)`` (None: unbounded), in the
        order they changed."""


class LeasesTx(Protocol):
    """Leases on running work: which replica holds a task and until when. A replica renews its
    own leases while it lives; another takes a task over only once its lease has expired."""

    async def take_lease(self, task_id: str, owner: str, expires_at: float) -> None:
        """Lease ``task_id`` to ``owner`` until ``expires_at`` (replacing any lease on it)."""

    async def renew_leases(self, owner: str, expires_at: float) -> int:
        """Extend every lease ``owner`` holds to ``expires_at``; how many it holds."""

    async def claim_lease(self, task_id: str, owner: str, expires_at: float, now: float) -> bool:
        """Compare-and-set: take ``task_id``'s lease for ``owner`` only if it has none or its
        lease expired before ``now``. False, changing nothing, while another's lease runs."""

    async def drop_lease(self, task_id: str) -> None:
        """Forget the task's lease (it left the leased state); nothing if it had none."""

    async def unleased_tasks(self, states: Sequence[str], now: float) -> list[TaskRow]:
        """Tasks in ``states`` with no lease or one expired before ``now``, oldest first."""


class ClaimsTx(Protocol):
    """Work that several replicas find in the same queue, taken by one of them: a claim is a
    lease (:class:`LeasesTx`), renewed while its replica lives and free again once expired."""

    async def claim_tasks(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[TaskRow]:
        """Lease to ``owner`` until ``expires_at`` at most ``limit`` tasks in ``states`` that
        nobody holds (no lease, or one expired before ``now``), oldest first; the tasks
        claimed. Two transactions claiming at once never both get a task (PostgreSQL: the
        rows are picked ``FOR UPDATE SKIP LOCKED``)."""

    async def claim_expired_invoices(
        self, owner: str, expires_at: float, now: float, limit: int
    ) -> list[InvoiceRow]:
        """Claim for ``owner`` until ``expires_at`` at most ``limit`` open invoices past their
        expiry at ``now`` that no other claimant holds (no claim, an expired one, or
        ``owner``'s own, which is renewed), soonest expired first; the invoices claimed. Two
        transactions claiming at once never both get an invoice (PostgreSQL: ``FOR UPDATE
        SKIP LOCKED``). The claim lasts until :meth:`drop_claim` or ``expires_at``."""

    async def claim_payouts(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[PayoutRow]:
        """As :meth:`claim_expired_invoices`, for payouts in ``states``, oldest first."""

    async def renew_claims(self, owner: str, expires_at: float, now: float) -> int:
        """Extend every claim ``owner`` holds to ``expires_at``; forget every claim that
        expired before ``now`` (free already) and every claim on a row no longer open (an
        invoice settled or expired, a payout final: nothing left to do); how many ``owner``
        still holds."""

    async def drop_claim(self, kind: str, key: str, owner: str) -> None:
        """Give up ``owner``'s claim on ``key`` of ``kind`` (:data:`INVOICE_CLAIM`,
        :data:`PAYOUT_CLAIM`); nothing if another holds it or nobody does."""


class BudgetsTx(Protocol):
    """What each budget scope spent in each period."""

    async def budget_usage(self, scope: str, period: str) -> tuple[int, int]:
        """(spent msat, spent nano-USD) of ``scope`` in ``period``; (0, 0) if nothing yet."""

    async def add_budget_usage(self, scope: str, period: str, msat: int, nusd: int) -> None:
        """Add to (never replace) what ``scope`` spent in ``period``."""


class TopupsTx(Protocol):
    """Purchases of OpenRouter credits."""

    async def insert_topup(self, topup: TopupRow) -> None:
        """Store a new top-up; an id seen before raises :class:`StoreError`."""

    async def update_topup(
        self, topup_id: str, *, state: str, data: dict[str, Any], expected_state: str, now: float
    ) -> bool:
        """Compare-and-set on the state, as :meth:`TasksTx.update_task`."""

    async def topups(
        self, states: Sequence[str] | None = None, since: float | None = None
    ) -> list[TopupRow]:
        """Top-ups in ``states`` (None: all) created at or after ``since``, oldest first."""


class PayoutsTx(Protocol):
    """Outgoing payments (withdrawals)."""

    async def insert_payout(self, payout: PayoutRow) -> bool:
        """Insert a new payout; False, changing nothing, if one with this payment hash or
        this ref exists already."""

    async def payout(self, payment_hash: str) -> PayoutRow | None: ...

    async def payouts_in_states(self, states: Sequence[str]) -> list[PayoutRow]:
        """Every payout in one of ``states``, oldest first."""

    async def update_payout(self, payout: PayoutRow, *, expected_state: str) -> bool:
        """Write ``payout``'s state and outcome (updated_at, attempted_at, fee, preimage,
        error) if it is still in ``expected_state``; False, changing nothing, otherwise."""


class AuditTx(Protocol):
    """The hash-chained audit trail (``billing/audit.py`` computes the hashes)."""

    async def audit_tail(self) -> tuple[int, str] | None:
        """(seq, hash) of the last audit entry, None when the trail is empty."""

    async def insert_audit(
        self, seq: int, at: float, kind: str, data: str, prev_hash: str, digest: str
    ) -> None:
        """Append an entry; a seq seen before raises :class:`StoreError`."""

    async def audit_after(self, seq: int, limit: int) -> list[AuditRecord]:
        """At most ``limit`` entries after ``seq``, in seq order."""


class KeysTx(Protocol):
    """API accounts, L402 root keys and small named values."""

    async def insert_api_account(self, account_id: str, key_hash: str, now: float) -> None:
        """Store an account by its key's hash; a used id or hash raises :class:`StoreError`."""

    async def api_account_by_key_hash(self, key_hash: str) -> str | None: ...

    async def put_root_key(self, id_hash: str, root_key: bytes, now: float) -> None:
        """Store a root key; an id seen before raises :class:`StoreError` (never replaced)."""

    async def root_key(self, id_hash: str) -> bytes | None: ...

    async def get_value(self, key: str) -> str | None: ...

    async def set_value(self, key: str, value: str) -> None:
        """Set or replace the value."""

    async def delete_value(self, key: str) -> None:
        """Remove the value (none: nothing to do)."""


class BenchTx(Protocol):
    """Model benchmark results (``service/bench/``)."""

    async def insert_bench_results(self, rows: Sequence[BenchRecord]) -> None:
        """Store results; a (run_id, model, prompt_id) seen before raises :class:`StoreError`."""

    async def bench_results(self, model: str) -> list[BenchRecord]:
        """Every stored result for ``model``, oldest first (then by prompt id)."""


class NotifyTx(Protocol):
    """Notes to other processes on the same database (:mod:`.notes`): wake-ups, not data."""

    async def notify(self, channel: str, payload: str) -> None:
        """Send ``payload`` on ``channel`` if and when this transaction commits (nothing if it
        rolls back): every listener on the database, in this process or another, hears it
        after the commit, notes of one transaction in the order sent. Write transactions only;
        a channel that is not a lower-case name, a payload over ``notes.NOTE_MAX`` bytes, or a
        read snapshot raises :class:`StoreError`."""


class Tx(
    LedgerTx,
    InvoicesTx,
    OutboxTx,
    DeliveriesTx,
    TasksTx,
    LeasesTx,
    ClaimsTx,
    BudgetsTx,
    TopupsTx,
    PayoutsTx,
    AuditTx,
    KeysTx,
    BenchTx,
    NotifyTx,
    Protocol,
):
    """Every concept's verbs, inside one transaction (or one read snapshot)."""


class Store(Protocol):
    """A database: serialized write transactions and consistent read snapshots.

    ``transaction()`` commits when its block ends and rolls everything back if it raises;
    writers run one at a time, so a check followed by a write cannot interleave with another
    writer. ``read()`` sees one consistent snapshot of committed data, never a writer's
    uncommitted rows.
    """

    #: Other processes (replicas) may use this database at once: their leases may be live.
    shared: bool

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...
    def singleton(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Try to become the one process running ``name`` (a top-up controller): True while
        the block runs if this process holds it, False (at once, no waiting) if another does.
        Held until the block exits or the process dies."""
        ...

    def read(self) -> AbstractAsyncContextManager[Tx]: ...
    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str | None]]:
        """Hear the notes sent on ``channel`` while the block runs: every note committed after
        the block started, in commit order. ``None`` in their stead means some may have been
        missed (the engine lost its connection and has it again, or the listener fell far
        behind): re-read whatever the notes were about."""
        ...

    def lookup(self) -> AbstractAsyncContextManager[Tx]:
        """A read of one statement (a verb that runs one query): committed data as that
        statement sees it, with no snapshot held for more. On a server it saves ``read()``'s
        BEGIN and COMMIT round trips; a second statement in the block raises
        :class:`StoreError` there."""
        ...

    async def close(self) -> None: ...
