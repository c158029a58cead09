"""What every SQLite concept module shares: the connection and the helpers that run statements."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ..contracts import StoreError


class SqliteBase:
    """One transaction or read snapshot's connection; the concept mixins add the verbs."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params).fetchone()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute a write; the rows it changed. A broken constraint is a StoreError."""
        try:
            return int(self._conn.execute(sql, params).rowcount)
        except sqlite3.IntegrityError as exc:
            raise StoreError(str(exc)) from exc

    def _insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute an INSERT; the new row's id. A broken constraint is a StoreError."""
        try:
            row_id = self._conn.execute(sql, params).lastrowid
        except sqlite3.IntegrityError as exc:
            raise StoreError(str(exc)) from exc
        assert row_id is not None
        return row_id

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise StoreError(str(exc)) from exc
