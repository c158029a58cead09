"""What every PostgreSQL concept module shares: the connection and the helpers that run
statements, turning the server's refusals into :class:`StoreError`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

import asyncpg

from ..contracts import StoreError

# A pool connection or a bare one: both run statements the same way.
Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)


@contextmanager
def _refused() -> Iterator[None]:
    # Constraint violations (unique, check, foreign key) and values the server cannot store
    # (a NUL in text, a number out of range) are the caller's problem, not the engine's.
    try:
        yield
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        raise StoreError(str(exc)) from exc


class PostgresBase:
    """One transaction or read snapshot's connection; the concept mixins add the verbs."""

    def __init__(self, conn: Connection, *, single: bool = False) -> None:
        self._conn = conn
        self._single = single  # a lookup: one statement, seen outside any transaction
        self._spent = False

    def _statement(self, *, write: bool = False) -> None:
        if self._single:
            if write:  # it would commit at once, outside every writer's lock
                raise StoreError("a lookup only reads")
            if self._spent:
                raise StoreError("a lookup runs one statement; read() takes more in one snapshot")
            self._spent = True

    async def _all(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self._statement()
        with _refused():
            return await self._conn.fetch(sql, *args)

    async def _one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self._statement()
        with _refused():
            return await self._conn.fetchrow(sql, *args)

    async def _value(self, sql: str, *args: Any) -> Any:
        self._statement()
        with _refused():
            return await self._conn.fetchval(sql, *args)

    async def _run(self, sql: str, *args: Any) -> int:
        """Execute a write; the rows it changed (from the command tag, ``UPDATE 1``)."""
        self._statement(write=True)
        with _refused():
            status = await self._conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])

    async def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        self._statement(write=True)
        with _refused():
            await self._conn.executemany(sql, rows)
