"""Leases on running work on PostgreSQL. Contract: ``LeasesTx``."""

from __future__ import annotations

from collections.abc import Sequence

from ..rows import TaskRow
from .base import PostgresBase
from .tasks import _task


class PostgresLeases(PostgresBase):
    async def take_lease(self, task_id: str, owner: str, expires_at: float) -> None:
        await self._run(
            "INSERT INTO leases (task_id, owner, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at",
            task_id,
            owner,
            expires_at,
        )

    async def renew_leases(self, owner: str, expires_at: float) -> int:
        return await self._run(
            "UPDATE leases SET expires_at = $1 WHERE owner = $2", expires_at, owner
        )

    async def claim_lease(self, task_id: str, owner: str, expires_at: float, now: float) -> bool:
        changed = await self._run(
            "INSERT INTO leases (task_id, owner, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at WHERE leases.expires_at < $4",
            task_id,
            owner,
            expires_at,
            now,
        )
        return changed == 1

    async def drop_lease(self, task_id: str) -> None:
        await self._run("DELETE FROM leases WHERE task_id = $1", task_id)

    async def unleased_tasks(self, states: Sequence[str], now: float) -> list[TaskRow]:
        rows = await self._all(
            "SELECT t.id, t.state, t.agent, t.data, t.created_at, t.updated_at FROM tasks t "
            "LEFT JOIN leases l ON l.task_id = t.id "
            "WHERE t.state = ANY($1::text[]) AND (l.task_id IS NULL OR l.expires_at < $2) "
            "ORDER BY t.created_at, t.seq",
            list(states),
            now,
        )
        return [_task(r) for r in rows]
