"""Callback deliveries on PostgreSQL. Contract: ``DeliveriesTx``."""

from __future__ import annotations

from ..rows import DeliveryRow
from .base import PostgresBase


class PostgresDeliveries(PostgresBase):
    async def insert_delivery(
        self, event_id: int, task_id: str, destination: str, state: str, now: float
    ) -> None:
        await self._run(
            "INSERT INTO deliveries (event_id, task_id, destination, state, created_at, "
            "updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
            event_id,
            task_id,
            destination,
            state,
            now,
        )

    async def pending_destinations(self, limit: int) -> list[str]:
        rows = await self._all(
            "SELECT destination FROM deliveries WHERE state = 'pending' "
            "GROUP BY destination ORDER BY MIN(id) LIMIT $1",
            limit,
        )
        return [r[0] for r in rows]

    async def pending_deliveries(self, destination: str, limit: int) -> list[DeliveryRow]:
        rows = await self._all(
            "SELECT id, event_id, task_id, destination, attempts FROM deliveries "
            "WHERE state = 'pending' AND destination = $1 ORDER BY id LIMIT $2",
            destination,
            limit,
        )
        return [DeliveryRow(*r) for r in rows]

    async def count_pending_deliveries(self, destination: str) -> int:
        return int(
            await self._value(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND destination = $1",
                destination,
            )
        )

    async def finish_delivery(
        self, delivery_id: int, *, delivered: bool, attempts: int, error: str | None, now: float
    ) -> None:
        if delivered:
            await self._run("DELETE FROM deliveries WHERE id = $1", delivery_id)
        else:
            await self._run(
                "UPDATE deliveries SET state = 'failed', attempts = $1, error = $2, "
                "updated_at = $3 WHERE id = $4",
                attempts,
                error,
                now,
                delivery_id,
            )
