"""The event outbox and its cursors on PostgreSQL. Contract: ``OutboxTx``.

Ids come from an identity column. A reader following ``events_after`` must never see an id
commit below one it has already passed: that holds because writers are serialized (see
``__init__``), so ids are handed out in commit order.
"""

from __future__ import annotations

import json
from typing import Any

from ..rows import EventRow
from .base import PostgresBase


class PostgresOutbox(PostgresBase):
    async def append_event(self, topic: str, key: str, payload: dict[str, Any], now: float) -> int:
        return int(
            await self._value(
                "INSERT INTO outbox (topic, key, payload, created_at) VALUES ($1, $2, $3, $4) "
                "RETURNING id",
                topic,
                key,
                json.dumps(payload, separators=(",", ":")),
                now,
            )
        )

    async def events_after(self, position: int, limit: int = 100) -> list[EventRow]:
        rows = await self._all(
            "SELECT id, topic, key, payload, created_at FROM outbox WHERE id > $1 "
            "ORDER BY id LIMIT $2",
            position,
            limit,
        )
        return [EventRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def events_for(self, key: str) -> list[EventRow]:
        rows = await self._all(
            "SELECT id, topic, key, payload, created_at FROM outbox WHERE key = $1 ORDER BY id",
            key,
        )
        return [EventRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def last_event_id(self) -> int:
        return int(await self._value("SELECT COALESCE(MAX(id), 0) FROM outbox"))

    async def cursor(self, consumer: str) -> int:
        value = await self._value("SELECT position FROM cursors WHERE consumer = $1", consumer)
        return int(value) if value is not None else 0

    async def set_cursor(self, consumer: str, position: int) -> None:
        await self._run(
            "INSERT INTO cursors (consumer, position) VALUES ($1, $2) "
            "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
            consumer,
            position,
        )
