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

This module holds the connections, transactions and migrations; the verbs live one module per
concept (``ledger.py``, ``invoices.py``, ...), each a mixin on :class:`.base.SqliteBase`,
composed into :class:`.tx.SqliteTx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from pathlib import Path

from ..contracts import StoreError
from .notify import Switchboard
from .tx import SqliteTx

__all__ = ["SqliteStore", "SqliteTx", "migrations"]

log = logging.getLogger(__name__)


def migrations() -> list[tuple[int, str]]:
    """``(version, sql)`` for every shipped migration, in order."""
    folder = resources.files(__name__).joinpath("migrations")
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
    shared = False  # one serving process at a time

    def __init__(self, path: str, writer: sqlite3.Connection, reader: sqlite3.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._checkpointer: asyncio.Task[None] | None = None
        self._held: int | None = None  # the lock file's descriptor (see _hold)
        self._switchboard = Switchboard()
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
            tx = SqliteTx(self._writer)
            tx.outgoing = []
            try:
                yield tx
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            else:
                self._writer.execute("COMMIT")
                self._switchboard.deliver(tx.outgoing)

    @asynccontextmanager
    async def singleton(self, name: str) -> AsyncIterator[bool]:
        yield True  # one serving process per database file: it runs every singleton

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

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str | None]]:
        return self._switchboard.listen(channel)

    def lookup(self) -> AbstractAsyncContextManager[SqliteTx]:
        return self.read()  # in this process: no round trips to save

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
