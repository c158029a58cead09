"""Moving a SQLite database to PostgreSQL (``satrouter copy-db``), checked before it commits.

The copy goes table by table over the columns both schemas have, so it keeps working when a
migration adds a column or a table to both engines. SQLite keeps some order implicitly (a
posting's place in its entry, a task's tie-break) in ``rowid``, where PostgreSQL has an
identity column (``postings.id``, ``tasks.seq``, ...): an identity column the source lacks is
filled from the source's ``rowid``, so ids and order come across unchanged.

Everything is written in one transaction on the target that also holds the writers' advisory
lock, and the checks run inside it, before the commit: the ledger check, every account's
balance against the source's, the audit chain, and the row count of each table. A copy that
fails any of them is rolled back and leaves the target as empty as it was. The source is held
exclusively through its lock file all along (as restore does), so no satrouter can open it
and write while it is read.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from .. import audit, ledger
from .backup import BackupError, check, database_path, exclusive
from .contracts import StoreError
from .postgres import WRITE_LOCK, PostgresTx, migrate
from .sqlite import migrations as sqlite_migrations

#: The tables that hold money, keys and state; both schemas must have each of them.
REQUIRED_TABLES = (
    "accounts",
    "journal",
    "postings",
    "invoices",
    "tasks",
    "outbox",
    "cursors",
    "deliveries",
    "budget_usage",
    "topups",
    "payouts",
    "audit",
    "api_accounts",
    "l402_root_keys",
    "kv",
    "bench_results",
)
#: Copied first, in this order: the tables others refer to by foreign key.
FIRST = ("accounts", "journal")
#: Bookkeeping of each engine, not data: never copied.
ENGINE_TABLES = frozenset({"schema_version", "sqlite_sequence", "sqlite_stat1"})
BATCH = 1000  # rows read and written at a time
# Names go into the statements as quoted identifiers: only plain ones are accepted.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class CopyError(Exception):
    """The copy was refused or failed its checks; the target is left as it was."""


@dataclass(frozen=True, slots=True)
class Copied:
    """What ``copy_db`` moved and checked."""

    rows: dict[str, int]  # table -> rows, the same on both sides
    accounts: int
    audit_entries: int
    schema_version: int  # the target's, after migrating

    def report(self) -> str:
        total = sum(self.rows.values())
        lines = [
            f"copied {total} rows in {len(self.rows)} tables "
            f"(target schema version {self.schema_version})",
            *(f"  {table:<16} {count:>10}" for table, count in sorted(self.rows.items())),
            "checks on the target before commit: ledger check ok, "
            f"{self.accounts} account balances equal the source's, "
            f"audit chain intact ({self.audit_entries} entries), row counts match",
        ]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    pg_type: str
    identity: bool


def _sqlite_tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if row[0] not in ENGINE_TABLES
    ]
    return {
        name: [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')] for name in names
    }


async def _pg_tables(conn: asyncpg.Connection[asyncpg.Record]) -> dict[str, list[_Column]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_identity FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, list[_Column]] = {}
    for row in rows:
        if row["table_name"] in ENGINE_TABLES:
            continue
        column = _Column(row["column_name"], row["data_type"], row["is_identity"] == "YES")
        tables.setdefault(row["table_name"], []).append(column)
    return tables


async def _tables_with_rows(conn: asyncpg.Connection[asyncpg.Record]) -> list[str]:
    held = []
    for table in await _pg_tables(conn):
        if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table}")'):
            held.append(table)
    return held


def _convert(pg_type: str, value: Any) -> Any:
    """A SQLite value as the target column's type wants it (asyncpg checks types strictly)."""
    if value is None:
        return None
    if pg_type == "boolean":
        return bool(value)
    if pg_type == "double precision":
        return float(value)
    if pg_type in ("bigint", "integer", "smallint"):
        return int(value)
    if pg_type == "bytea":
        return bytes(value)
    return value


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one table is copied: the source's select and the target's insert."""

    table: str
    select: str
    insert: str
    types: tuple[str, ...]
    identities: tuple[str, ...]  # the target's identity columns, reset past the copied ids


def _plans(source: dict[str, list[str]], target: dict[str, list[_Column]]) -> list[_Plan]:
    missing = [t for t in REQUIRED_TABLES if t not in source or t not in target]
    if missing:
        raise CopyError(f"both databases must have the tables {', '.join(missing)}")
    for table, names in [*source.items(), *((t, [c.name for c in cs]) for t, cs in target.items())]:
        strange = [n for n in [table, *names] if not _IDENTIFIER.fullmatch(n)]
        if strange:
            raise CopyError(f"not a satrouter schema: unexpected name {strange[0]!r}")
    only_source = sorted(set(source) - set(target))
    if only_source:
        raise CopyError(
            f"the target has no table {', '.join(only_source)}: copy with the satrouter "
            "version that wrote the source"
        )
    order = [*FIRST, *sorted(t for t in source if t not in FIRST)]
    plans = []
    for table in order:
        in_target = {c.name for c in target[table]}
        lost = [c for c in source[table] if c not in in_target]
        if lost:
            raise CopyError(f"the target's {table} has no column {', '.join(lost)}")
        # Columns in both, and the target's identity columns the source keeps as its rowid.
        picked = [c for c in target[table] if c.name in source[table] or c.identity]
        select = ", ".join(f'"{c.name}"' if c.name in source[table] else "rowid" for c in picked)
        columns = ", ".join(f'"{c.name}"' for c in picked)
        marks = ", ".join(f"${i}" for i in range(1, len(picked) + 1))
        plans.append(
            _Plan(
                table,
                f'SELECT {select} FROM "{table}" ORDER BY rowid',
                f'INSERT INTO "{table}" ({columns}) OVERRIDING SYSTEM VALUE VALUES ({marks})',
                tuple(c.pg_type for c in picked),
                tuple(c.name for c in target[table] if c.identity),
            )
        )
    return plans


def _batches(conn: sqlite3.Connection, plan: _Plan) -> Iterator[list[tuple[Any, ...]]]:
    cursor = conn.execute(plan.select)
    while rows := cursor.fetchmany(BATCH):
        yield [tuple(_convert(t, v) for t, v in zip(plan.types, row, strict=True)) for row in rows]


class _InTransaction:
    """The :class:`~billing.store.contracts.Store` the checks read: the copy's own
    uncommitted transaction, which no other connection can see yet."""

    shared = False  # nobody else sees it: the checks run alone

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        self._conn = conn

    @asynccontextmanager
    async def singleton(self, name: str) -> AsyncIterator[bool]:
        yield True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        yield PostgresTx(self._conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[PostgresTx]:
        yield PostgresTx(self._conn)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str | None]]:
        raise StoreError("the copy's checks listen to nothing")
        yield  # unreachable: makes this a generator

    def lookup(self) -> AbstractAsyncContextManager[PostgresTx]:
        return self.read()

    async def close(self) -> None:
        return None


def _source_sequences(conn: sqlite3.Connection) -> dict[str, int]:
    """AUTOINCREMENT's high-water marks: ids of deleted rows are never handed out again."""
    try:
        return {
            name: int(seq) for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")
        }
    except sqlite3.OperationalError:  # no AUTOINCREMENT table yet
        return {}


async def _verify(
    conn: asyncpg.Connection[asyncpg.Record],
    source: sqlite3.Connection,
    plans: list[_Plan],
) -> tuple[dict[str, int], int, int]:
    """Row counts, account balances, ledger and audit chain on the target, against the source."""
    rows: dict[str, int] = {}
    for plan in plans:
        theirs = int(source.execute(f'SELECT COUNT(*) FROM "{plan.table}"').fetchone()[0])
        ours = int(await conn.fetchval(f'SELECT COUNT(*) FROM "{plan.table}"'))
        if theirs != ours:
            raise CopyError(f"{plan.table}: {ours} rows on the target, {theirs} on the source")
        rows[plan.table] = ours
    tx = PostgresTx(conn)
    checked = await ledger.check(tx)
    if not checked.ok:
        raise CopyError(f"the ledger check fails on the target: {'; '.join(checked.problems)}")
    theirs_balances = dict(source.execute("SELECT code, balance FROM accounts").fetchall())
    ours_balances = {a.code: a.balance for a in await tx.accounts()}
    if ours_balances != theirs_balances:
        differ = sorted(
            code
            for code in set(ours_balances) | set(theirs_balances)
            if ours_balances.get(code) != theirs_balances.get(code)
        )
        raise CopyError(f"balances differ from the source's: {', '.join(differ[:10])}")
    chain = await audit.verify(_InTransaction(conn))
    if not chain.ok:
        raise CopyError(f"the audit chain breaks at entry {chain.first_bad}: {chain.reason}")
    return rows, len(ours_balances), chain.entries


async def copy_db(source_url: str, target_url: str) -> Copied:
    """Copy the SQLite database ``source_url`` into the empty PostgreSQL ``target_url``."""
    if not target_url.startswith(("postgresql://", "postgres://")):
        raise CopyError("the target must be a postgresql:// database")
    try:
        path: Path = database_path(source_url)
        check(path)
    except BackupError as exc:
        raise CopyError(f"source: {exc}") from None
    try:
        with exclusive(path, action="copy"):
            return await _copy_held(path, target_url)
    except BackupError as exc:
        raise CopyError(str(exc)) from None


async def _copy_held(path: Path, target_url: str) -> Copied:
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        version = int(source.execute("PRAGMA user_version").fetchone()[0])
        latest = max(v for v, _ in sqlite_migrations())
        if version < latest:
            raise CopyError(
                f"{path} has schema version {version}, this satrouter's is {latest}: run "
                "satrouter migrate on it (SATROUTER_DATABASE_URL set to it) first"
            )
        source.execute("BEGIN")  # one snapshot for the copy and its checks
        try:
            conn = await asyncpg.connect(target_url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise CopyError(f"cannot connect to the target: {exc}") from None
        try:
            held = await _tables_with_rows(conn)
            if held:
                raise CopyError(
                    f"the target already holds data (in {', '.join(held)}): copy into a new, "
                    "empty database"
                )
            schema_version = await migrate(conn)
            plans = _plans(_sqlite_tables(source), await _pg_tables(conn))
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                # Again under the lock: a service may have started on the target meanwhile.
                held = await _tables_with_rows(conn)
                if held:
                    raise CopyError(f"the target took data while copying ({', '.join(held)})")
                sequences = _source_sequences(source)
                for plan in plans:
                    for batch in _batches(source, plan):
                        await conn.executemany(plan.insert, batch)
                    for column in plan.identities:
                        copied = await conn.fetchval(f'SELECT MAX("{column}") FROM "{plan.table}"')
                        high = max(copied or 0, sequences.get(plan.table, 0))
                        if high:  # the next id the target hands out is past every copied one
                            await conn.execute(
                                "SELECT setval(pg_get_serial_sequence($1, $2), $3)",
                                plan.table,
                                column,
                                high,
                            )
                rows, accounts, entries = await _verify(conn, source, plans)
        except asyncpg.PostgresError as exc:
            raise CopyError(f"the target refused the copy (nothing was written): {exc}") from None
        finally:
            await conn.close()
    finally:
        source.close()
    return Copied(rows, accounts, entries, schema_version)
