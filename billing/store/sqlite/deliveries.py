"""Callback deliveries on SQLite. Contract: ``DeliveriesTx``."""

from __future__ import annotations

from ..rows import DeliveryRow
from .base import SqliteBase


class SqliteDeliveries(SqliteBase):
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
