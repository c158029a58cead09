"""The SQLite engine (WAL): the embedded default, one process per database file.

Statements run on the event loop thread. In WAL mode with ``synchronous=NORMAL`` a commit does
not wait for the disk, so a statement takes microseconds, less than handing it to a worker
thread (aiosqlite's way) costs: ``make bench-pipeline`` measured the hand-offs as the service's
bottleneck (docs/dependencies.md). The one step that does wait for the disk, the WAL
checkpoint, is taken off the loop: automatic checkpoints are off and a background thread runs
them on its own connection.

Writes go through one connection under an asyncio lock with ``BEGIN IMMEDIATE``, so a check
followed by a write (a balance before a reservation) cannot interleave with another writer.
Reads use a second connection: WAL gives them a consistent snapshot that never sees a writer's
uncommitted rows. Migrations in ``migrations/NNNN_*.sql`` run on open, tracked by
``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from . import (
    AccountRow,
    DeliveryRow,
    EventRow,
    InvoiceRow,
    JournalRow,
    LedgerTotals,
    PayoutRow,
    PostingRow,
    StoreError,
    TaskRow,
    TopupRow,
)

log = logging.getLogger(__name__)
_CREDIT_NORMAL = ("liability", "income", "equity")


def migrations() -> list[tuple[int, str]]:
    """``(version, sql)`` for every shipped migration, in order."""
    folder = resources.files("billing.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text()))
    return sorted(found)


def lock_path(database: Path) -> Path:
    """The file a store holds a shared lock on while open (restore takes it exclusively)."""
    return database.with_name(database.name + ".lock")


def _hold(path: str) -> int | None:
    """A shared lock on the database's lock file, so a restore cannot replace it under us."""
    if path == ":memory:":
        return None
    fd = os.open(lock_path(Path(path)), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"{path} is being restored: start again when the restore is done"
        ) from None
    return fd


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly and path != ":memory:":
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class SqliteStore:
    def __init__(self, path: str, writer: sqlite3.Connection, reader: sqlite3.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._checkpointer: asyncio.Task[None] | None = None
        self._held: int | None = None  # the lock file's descriptor (see _hold)
        if path != ":memory:":
            self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoints())

    async def _checkpoints(self, every: float = 1.0) -> None:
        """Move the WAL into the database file now and then, in a thread: the disk wait."""

        def checkpoint() -> None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(checkpoint)
            except sqlite3.Error as exc:  # busy: the next round will do it
                log.debug("checkpoint skipped: %s", exc)

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        held = _hold(path)
        try:
            store = await cls._open(path)
        except BaseException:
            if held is not None:
                os.close(held)
            raise
        store._held = held
        return store

    @classmethod
    async def _open(cls, path: str) -> SqliteStore:
        writer = _connect(path)
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA synchronous = NORMAL")
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoints
        cls._migrate(writer)
        # In memory there is no second connection to the same database: share the writer.
        reader = writer if path == ":memory:" else _connect(path, readonly=True)
        return cls(path, writer, reader)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        row = conn.execute("PRAGMA user_version").fetchone()
        current = int(row[0]) if row else 0
        for version, sql in migrations():
            if version <= current:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # executescript would commit implicitly; run statements one by one instead.
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def schema_version(self) -> int:
        row = self._writer.execute("PRAGMA user_version").fetchone()
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTx]:
        async with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTx(self._writer)
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            else:
                self._writer.execute("COMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqliteTx]:
        if self._reader is self._writer:  # in memory: reads wait for writers
            async with self._write_lock:
                yield SqliteTx(self._reader)
            return
        async with self._read_lock:
            self._reader.execute("BEGIN")
            try:
                yield SqliteTx(self._reader)
            finally:
                self._reader.execute("ROLLBACK")

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        if self._reader is not self._writer:
            self._reader.close()
        self._writer.close()
        if self._held is not None:
            os.close(self._held)  # closing the descriptor releases the lock
            self._held = None


def _statements(sql: str) -> list[str]:
    """Split a script into statements, letting SQLite decide where each ends (comments may
    contain semicolons)."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer[:60]!r}")
    return statements


class SqliteTx:
    """One transaction or read snapshot on SQLite. See :class:`billing.store.Tx`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params).fetchone()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return int(self._conn.execute(sql, params).rowcount)
        except sqlite3.IntegrityError as exc:
            raise StoreError(str(exc)) from exc

    # -- ledger ---------------------------------------------------------------------------

    async def ensure_accounts(
        self, accounts: Sequence[tuple[str, str, str, bool]], now: float
    ) -> None:
        self._conn.executemany(
            "INSERT INTO accounts (code, currency, type, no_overdraft, balance, created_at) "
            "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (code) DO NOTHING",
            [(code, currency, kind, int(flag), now) for code, currency, kind, flag in accounts],
        )

    async def account(self, code: str) -> AccountRow | None:
        row = self._one(
            "SELECT code, currency, type, no_overdraft, balance FROM accounts WHERE code = ?",
            (code,),
        )
        return AccountRow(row[0], row[1], row[2], bool(row[3]), row[4]) if row else None

    async def accounts(self, prefix: str = "") -> list[AccountRow]:
        rows = self._all(
            "SELECT code, currency, type, no_overdraft, balance FROM accounts "
            "WHERE code >= ? AND code < ? ORDER BY code",
            (prefix, prefix + "\uffff"),
        )
        return [AccountRow(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def _journal(self, where: str, params: Sequence[Any]) -> list[JournalRow]:
        rows = self._all(
            "SELECT id, idempotency_key, kind, ref, memo, digest, created_at FROM journal "
            f"WHERE {where} ORDER BY id",
            params,
        )
        out = []
        for r in rows:
            postings = self._all(
                "SELECT account, currency, amount FROM postings WHERE journal_id = ? "
                "ORDER BY rowid",
                (r[0],),
            )
            out.append(
                JournalRow(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    tuple(PostingRow(p[0], p[1], p[2]) for p in postings),
                )
            )
        return out

    async def journal_by_key(self, idempotency_key: str) -> JournalRow | None:
        rows = self._journal("idempotency_key = ?", (idempotency_key,))
        return rows[0] if rows else None

    async def journal_by_ref(self, ref: str) -> list[JournalRow]:
        return self._journal("ref = ?", (ref,))

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
        journal_id = self._conn.execute(
            "INSERT INTO journal (idempotency_key, kind, ref, memo, digest, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (idempotency_key, kind, ref, memo, digest, now),
        ).lastrowid
        assert journal_id is not None
        self._conn.executemany(
            "INSERT INTO postings (journal_id, account, currency, amount) VALUES (?, ?, ?, ?)",
            [(journal_id, p.account, p.currency, p.amount) for p in postings],
        )
        self._conn.executemany(
            "UPDATE accounts SET balance = balance + ? WHERE code = ?",
            [(p.amount, p.account) for p in postings],
        )
        return journal_id

    async def ledger_totals(self) -> LedgerTotals:
        by_currency = {
            r[0]: r[1] for r in self._all("SELECT currency, SUM(amount) FROM postings GROUP BY 1")
        }
        unbalanced = [
            r[0]
            for r in self._all(
                "SELECT journal_id FROM postings GROUP BY journal_id, currency "
                "HAVING SUM(amount) != 0"
            )
        ]
        drifted = [
            (r[0], r[1], r[2])
            for r in self._all(
                "SELECT a.code, a.balance, COALESCE(SUM(p.amount), 0) AS derived "
                "FROM accounts a LEFT JOIN postings p ON p.account = a.code "
                "GROUP BY a.code HAVING a.balance != derived"
            )
        ]
        overdrawn = [
            (r[0], r[1])
            for r in self._all(
                "SELECT code, CASE WHEN type IN (?, ?, ?) THEN -balance ELSE balance END AS normal "
                "FROM accounts WHERE no_overdraft = 1 AND normal < 0",
                _CREDIT_NORMAL,
            )
        ]
        counts = self._one(
            "SELECT (SELECT COUNT(*) FROM journal), (SELECT COUNT(*) FROM postings), "
            "(SELECT COUNT(*) FROM accounts)"
        )
        return LedgerTotals(
            by_currency, unbalanced, drifted, overdrawn, counts[0], counts[1], counts[2]
        )

    async def account_flow(self, code: str, since: float) -> int:
        row = self._one(
            "SELECT COALESCE(SUM(p.amount), 0) FROM postings p "
            "JOIN journal j ON j.id = p.journal_id WHERE p.account = ? AND j.created_at >= ?",
            (code, since),
        )
        return int(row[0])

    # -- invoices --------------------------------------------------------------------------

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

    # -- outbox ----------------------------------------------------------------------------

    async def append_event(self, topic: str, key: str, payload: dict[str, Any], now: float) -> int:
        event_id = self._conn.execute(
            "INSERT INTO outbox (topic, key, payload, created_at) VALUES (?, ?, ?, ?)",
            (topic, key, json.dumps(payload, separators=(",", ":")), now),
        ).lastrowid
        assert event_id is not None
        return event_id

    async def events_after(self, position: int, limit: int = 100) -> list[EventRow]:
        rows = self._all(
            "SELECT id, topic, key, payload, created_at FROM outbox WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (position, limit),
        )
        return [EventRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def events_for(self, key: str) -> list[EventRow]:
        rows = self._all(
            "SELECT id, topic, key, payload, created_at FROM outbox WHERE key = ? ORDER BY id",
            (key,),
        )
        return [EventRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def last_event_id(self) -> int:
        row = self._one("SELECT COALESCE(MAX(id), 0) FROM outbox")
        return int(row[0])

    async def cursor(self, consumer: str) -> int:
        row = self._one("SELECT position FROM cursors WHERE consumer = ?", (consumer,))
        return int(row[0]) if row else 0

    async def set_cursor(self, consumer: str, position: int) -> None:
        self._run(
            "INSERT INTO cursors (consumer, position) VALUES (?, ?) "
            "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
            (consumer, position),
        )

    # -- callback deliveries -----------------------------------------------------------------

    async def insert_delivery(
        self, event_id: int, task_id: str, destination: str, state: str, now: float
    ) -> None:
        self._run(
            "INSERT INTO deliveries (event_id, task_id, destination, state, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (event_id, task_id, destination, state, now, now),
        )

    async def pending_destinations(self, limit: int) -> list[str]:
        rows = self._all(
            "SELECT destination FROM deliveries WHERE state = 'pending' "
            "GROUP BY destination ORDER BY MIN(id) LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    async def pending_deliveries(self, destination: str, limit: int) -> list[DeliveryRow]:
        rows = self._all(
            "SELECT id, event_id, task_id, destination, attempts FROM deliveries "
            "WHERE state = 'pending' AND destination = ? ORDER BY id LIMIT ?",
            (destination, limit),
        )
        return [DeliveryRow(*r) for r in rows]

    async def count_pending_deliveries(self, destination: str) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND destination = ?",
            (destination,),
        )
        return int(row[0])

    async def finish_delivery(
        self, delivery_id: int, *, delivered: bool, attempts: int, error: str | None, now: float
    ) -> None:
        if delivered:
            self._run("DELETE FROM deliveries WHERE id = ?", (delivery_id,))
        else:
            self._run(
                "UPDATE deliveries SET state = 'failed', attempts = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                (attempts, error, now, delivery_id),
            )

    # -- tasks -----------------------------------------------------------------------------

    async def insert_task(self, task: TaskRow) -> None:
        self._run(
            "INSERT INTO tasks (id, state, agent, data, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                task.id,
                task.state,
                task.agent,
                json.dumps(task.data),
                task.created_at,
                task.updated_at,
            ),
        )

    async def task(self, task_id: str) -> TaskRow | None:
        row = self._one(
            "SELECT id, state, agent, data, created_at, updated_at FROM tasks WHERE id = ?",
            (task_id,),
        )
        return TaskRow(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5]) if row else None

    async def update_task(
        self,
        task_id: str,
        *,
        state: str,
        data: dict[str, Any],
        expected_state: str,
        now: float,
    ) -> bool:
        changed = self._run(
            "UPDATE tasks SET state = ?, data = ?, updated_at = ? WHERE id = ? AND state = ?",
            (state, json.dumps(data), now, task_id, expected_state),
        )
        return changed == 1

    async def tasks_in_states(self, states: Sequence[str]) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._all(
            "SELECT id, state, agent, data, created_at, updated_at FROM tasks "
            f"WHERE state IN ({marks}) ORDER BY created_at",
            tuple(states),
        )
        return [TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    async def tasks_updated_between(
        self, since: float | None, until: float | None, states: Sequence[str]
    ) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._all(
            "SELECT id, state, agent, data, created_at, updated_at FROM tasks "
            f"WHERE state IN ({marks}) AND updated_at >= ? AND updated_at < ? "
            "ORDER BY updated_at",
            (
                *states,
                since if since is not None else 0.0,
                until if until is not None else float("inf"),
            ),
        )
        return [TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    # -- budgets ---------------------------------------------------------------------------

    async def budget_usage(self, scope: str, period: str) -> tuple[int, int]:
        row = self._one(
            "SELECT spent_msat, spent_nusd FROM budget_usage WHERE scope = ? AND period = ?",
            (scope, period),
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def add_budget_usage(self, scope: str, period: str, msat: int, nusd: int) -> None:
        self._run(
            "INSERT INTO budget_usage (scope, period, spent_msat, spent_nusd) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (scope, period) DO UPDATE SET "
            "spent_msat = spent_msat + excluded.spent_msat, "
            "spent_nusd = spent_nusd + excluded.spent_nusd",
            (scope, period, msat, nusd),
        )

    # -- model benchmarks --------------------------------------------------------------------

    async def insert_bench_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._conn.executemany(
            "INSERT INTO bench_results (run_id, at, model, prompt_id, ttft_ms, latency_ms, "
            "prompt_tokens, completion_tokens, cost_nusd, score, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    async def bench_results(self, model: str) -> list[tuple[Any, ...]]:
        return [
            tuple(r)
            for r in self._all(
                "SELECT run_id, at, model, prompt_id, ttft_ms, latency_ms, prompt_tokens, "
                "completion_tokens, cost_nusd, score, error FROM bench_results WHERE model = ? "
                "ORDER BY at, prompt_id",
                (model,),
            )
        ]

    # -- top-ups ---------------------------------------------------------------------------

    async def insert_topup(self, topup: TopupRow) -> None:
        self._run(
            "INSERT INTO topups (id, state, amount_msat, usd_nusd, data, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                topup.id,
                topup.state,
                topup.amount_msat,
                topup.usd_nusd,
                json.dumps(topup.data),
                topup.created_at,
                topup.updated_at,
            ),
        )

    async def update_topup(
        self, topup_id: str, *, state: str, data: dict[str, Any], expected_state: str, now: float
    ) -> bool:
        return (
            self._run(
                "UPDATE topups SET state = ?, data = ?, updated_at = ? WHERE id = ? AND state = ?",
                (state, json.dumps(data), now, topup_id, expected_state),
            )
            == 1
        )

    async def topups(
        self, states: Sequence[str] | None = None, since: float | None = None
    ) -> list[TopupRow]:
        sql = "SELECT id, state, amount_msat, usd_nusd, data, created_at, updated_at FROM topups"
        where = ["created_at >= ?"]
        params: list[object] = [since if since is not None else 0.0]
        if states is not None:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        rows = self._all(f"{sql} WHERE {' AND '.join(where)} ORDER BY created_at", params)
        return [TopupRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    # -- payouts ---------------------------------------------------------------------------

    _PAYOUT_COLUMNS = (
        "payment_hash, ref, agent, bolt11, amount_msat, fee_limit_msat, state, created_at, "
        "updated_at, attempted_at, fee_msat, preimage, error"
    )

    async def insert_payout(self, payout: PayoutRow) -> bool:
        return (
            self._run(
                f"INSERT INTO payouts ({self._PAYOUT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                _payout_values(payout),
            )
            == 1
        )

    async def payout(self, payment_hash: str) -> PayoutRow | None:
        row = self._one(
            f"SELECT {self._PAYOUT_COLUMNS} FROM payouts WHERE payment_hash = ?", (payment_hash,)
        )
        return PayoutRow(*row) if row else None

    async def payouts_in_states(self, states: Sequence[str]) -> list[PayoutRow]:
        rows = self._all(
            f"SELECT {self._PAYOUT_COLUMNS} FROM payouts "
            f"WHERE state IN ({','.join('?' * len(states))}) ORDER BY created_at",
            list(states),
        )
        return [PayoutRow(*r) for r in rows]

    async def update_payout(self, payout: PayoutRow, *, expected_state: str) -> bool:
        return (
            self._run(
                "UPDATE payouts SET state = ?, updated_at = ?, attempted_at = ?, fee_msat = ?, "
                "preimage = ?, error = ? WHERE payment_hash = ? AND state = ?",
                (
                    payout.state,
                    payout.updated_at,
                    payout.attempted_at,
                    payout.fee_msat,
                    payout.preimage,
                    payout.error,
                    payout.payment_hash,
                    expected_state,
                ),
            )
            == 1
        )

    # -- audit trail -----------------------------------------------------------------------

    async def audit_tail(self) -> tuple[int, str] | None:
        row = self._one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), str(row[1])) if row else None

    async def insert_audit(
        self, seq: int, at: float, kind: str, data: str, prev_hash: str, digest: str
    ) -> None:
        self._run(
            "INSERT INTO audit (seq, at, kind, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
            (seq, at, kind, data, prev_hash, digest),
        )

    async def audit_after(
        self, seq: int, limit: int
    ) -> list[tuple[int, float, str, str, str, str]]:
        rows = self._all(
            "SELECT seq, at, kind, data, prev_hash, hash FROM audit WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    # -- API accounts, root keys, values ---------------------------------------------------

    async def insert_api_account(self, account_id: str, key_hash: str, now: float) -> None:
        self._run(
            "INSERT INTO api_accounts (id, key_hash, created_at) VALUES (?, ?, ?)",
            (account_id, key_hash, now),
        )

    async def api_account_by_key_hash(self, key_hash: str) -> str | None:
        row = self._one("SELECT id FROM api_accounts WHERE key_hash = ?", (key_hash,))
        return str(row[0]) if row else None

    async def put_root_key(self, id_hash: str, root_key: bytes, now: float) -> None:
        self._run(
            "INSERT INTO l402_root_keys (id_hash, root_key, created_at) VALUES (?, ?, ?)",
            (id_hash, root_key, now),
        )

    async def root_key(self, id_hash: str) -> bytes | None:
        row = self._one("SELECT root_key FROM l402_root_keys WHERE id_hash = ?", (id_hash,))
        return bytes(row[0]) if row else None

    async def get_value(self, key: str) -> str | None:
        row = self._one("SELECT value FROM kv WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_value(self, key: str, value: str) -> None:
        self._run(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _payout_values(p: PayoutRow) -> tuple[Any, ...]:
    return (
        p.payment_hash,
        p.ref,
        p.agent,
        p.bolt11,
        p.amount_msat,
        p.fee_limit_msat,
        p.state,
        p.created_at,
        p.updated_at,
        p.attempted_at,
        p.fee_msat,
        p.preimage,
        p.error,
    )
