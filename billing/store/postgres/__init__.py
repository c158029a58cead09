"""The PostgreSQL engine (asyncpg): for several processes or replicas on one database.

Correctness across processes is kept simple, and the same as SQLite's: writers are serialized
cluster-wide. Every write transaction first takes one transaction-level advisory lock
(``pg_advisory_xact_lock(WRITE_LOCK)``), released by its commit or rollback, so two writers
never interleave whichever process or replica they run in. A balance check followed by a
reservation, a budget's check and charge, an idempotency record's lookup and insert, and the
outbox's ids (handed out in commit order) then hold exactly as they do on SQLite, with no
per-statement row locks or serialization retries to reason about. The cost is throughput:
one writer at a time across the cluster (docs/architecture.md "Storage"). Inside one process
an asyncio lock queues writers before they take a pool connection, so waiting writers never
hold every connection while a writer needs one for a read.

Reads run in ``REPEATABLE READ READ ONLY`` transactions: one consistent snapshot of committed
data, never blocked by writers. A lookup (one read statement) runs outside any transaction.

Every round trip to the server costs satrouter CPU (the driver's and the event loop's work),
so the store spends as few as it can: a write transaction's ``BEGIN`` and its lock go in one
round trip, and a connection whose transaction ended cleanly goes back to the pool as it is.
asyncpg's default reset on release (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
RESET ALL``) would cost a round trip per transaction to undo session state these blocks never
create; any other use of a pooled connection (a singleton's session lock) gets the full reset.
asyncpg keeps each connection's prepared statements, so every statement is parsed once per
connection.

Migrations in ``migrations/NNNN_*.sql`` run on open, each in its own transaction, tracked in
the ``schema_version`` table, under a session advisory lock so that replicas starting
together migrate once (the others wait, then find nothing left to do).

The verbs live one module per concept (``ledger.py``, ``invoices.py``, ...), each a mixin on
:class:`.base.PostgresBase`, composed into :class:`.tx.PostgresTx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources

import asyncpg

from ..contracts import StoreError
from .notify import Listener
from .tx import PostgresTx

__all__ = ["MIGRATE_LOCK", "WRITE_LOCK", "PostgresStore", "PostgresTx", "migrations"]

# Advisory lock keys (any fixed 64-bit numbers no other application on the database uses).
WRITE_LOCK = 0x5A7_0001  # held by every write transaction until it ends
MIGRATE_LOCK = 0x5A7_0002  # held by the process applying migrations
SINGLETON_LOCKS = 0x5A7_0000_0000  # plus a name's CRC-32: held by the process running it

_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"

POOL_SIZE = 10  # connections per process: one writer at a time, the rest for readers


def migrations() -> list[tuple[int, str]]:
    """``(version, sql)`` for every shipped migration, in order."""
    folder = resources.files(__name__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text()))
    return sorted(found)


async def migrate(conn: asyncpg.Connection[asyncpg.Record]) -> int:
    """Apply the migrations this database lacks, once across every process; its version."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        for version, sql in migrations():
            if version <= current:
                continue
            async with conn.transaction():
                await conn.execute(sql)  # no arguments: the whole script in one round trip
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            current = version
        return current
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)


class _Release:
    """The pool's reset on release: none for a connection whose transaction ended cleanly
    (see the module docstring), asyncpg's full reset for any other."""

    def __init__(self) -> None:
        self.clean: set[asyncpg.Connection[asyncpg.Record]] = set()

    async def __call__(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        # asyncpg has already rolled back an open transaction; only session state is left.
        if conn in self.clean:
            self.clean.discard(conn)
            return
        if query := conn.get_reset_query():
            await conn.execute(query)


class PostgresStore:
    shared = True  # replicas share it

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], url: str, release: _Release) -> None:
        self._pool = pool
        self._release = release
        self._write_lock = asyncio.Lock()
        self._listener = Listener(url)  # its connection opens with the first listener

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            await migrate(conn)
        finally:
            await conn.close()
        release = _Release()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_SIZE, reset=release)
        return cls(pool, url, release)

    async def schema_version(self) -> int:
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        async with self._write_lock, self._pool.acquire() as conn:
            # One round trip: the simple-query protocol runs both statements in order.
            await conn.execute(_BEGIN_WRITE)
            async with self._ending(conn):
                tx = PostgresTx(conn)
                tx.writing = True
                yield tx

    @asynccontextmanager
    async def _ending(
        self, conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    ) -> AsyncIterator[None]:
        """Commit the transaction ``conn`` began when the block ends, roll it back if the
        block raised; a connection whose transaction ended so is released without a reset."""
        try:
            yield
        except BaseException:
            # A broken or busy (cancelled) connection cannot roll back now: the pool rolls it
            # back or closes it on release, and the block's own error is the one to raise.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("ROLLBACK")
            raise
        status = await conn.execute("COMMIT")
        if status != "COMMIT":  # PostgreSQL ends a failed transaction so, without an error
            raise StoreError("the transaction had failed and was rolled back")
        # The pool releases the connection, not this proxy of it (asyncpg has no public name
        # for it).
        self._release.clean.add(conn._con)  # type: ignore[attr-defined]

    @asynccontextmanager
    async def singleton(self, name: str) -> AsyncIterator[bool]:
        # A session advisory lock on a connection of its own, kept for the whole block: it
        # goes with the session, so a replica that dies lets another take over at once.
        key = SINGLETON_LOCKS + zlib.crc32(name.encode())
        async with self._pool.acquire() as conn:
            held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
            try:
                yield held
            finally:
                if held:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[PostgresTx]:
        async with self._pool.acquire() as conn:
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            async with self._ending(conn):
                yield PostgresTx(conn)

    @asynccontextmanager
    async def lookup(self) -> AsyncIterator[PostgresTx]:
        # No transaction: the one statement is its own (autocommit), one round trip.
        async with self._pool.acquire() as conn:
            yield PostgresTx(conn, single=True)
            self._release.clean.add(conn._con)  # type: ignore[attr-defined]

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str | None]]:
        return self._listener.listen(channel)

    async def close(self) -> None:
        await self._listener.close()
        await self._pool.close()
