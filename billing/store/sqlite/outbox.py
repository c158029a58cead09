"""The event outbox and its cursors on SQLite. Contract: ``OutboxTx``."""

from __future__ import annotations

import json
from typing import Any

from ..rows import EventRow
from .base import SqliteBase


class SqliteOutbox(SqliteBase):
    async def append_event(self, topic: str, key: str, payload: dict[str, Any], now: float) -> int:
        return self._insert(
            "INSERT INTO outbox (topic, key, payload, created_at) VALUES (?, ?, ?, ?)",
            (topic, key, json.dumps(payload, separators=(",", ":")), now),
        )

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
