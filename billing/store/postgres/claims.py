"""Claiming queued work on PostgreSQL: ``FOR UPDATE SKIP LOCKED``. Contract: ``ClaimsTx``."""

from __future__ import annotations

from collections.abc import Sequence

from ..rows import TaskRow
from .base import PostgresBase
from .tasks import _task


class PostgresClaims(PostgresBase):
    async def claim_tasks(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[TaskRow]:
        # SKIP LOCKED: a transaction claiming at the same time passes over the rows this one
        # is claiming instead of waiting for them (writers hold WRITE_LOCK as well today, so
        # none overlap; the claim stays right without it). The lease is the claim that lasts.
        rows = await self._all(
            "WITH picked AS ("
            " SELECT t.id FROM tasks t LEFT JOIN leases l ON l.task_id = t.id"
            " WHERE t.state = ANY($1::text[]) AND (l.task_id IS NULL OR l.expires_at < $4)"
            " ORDER BY t.created_at, t.seq LIMIT $5 FOR UPDATE OF t SKIP LOCKED"
            "), claimed AS ("
            " INSERT INTO leases (task_id, owner, expires_at) SELECT id, $2, $3 FROM picked"
            " ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at WHERE leases.expires_at < $4"
            " RETURNING task_id"
            ") SELECT t.id, t.state, t.agent, t.data, t.created_at, t.updated_at"
            " FROM tasks t JOIN claimed c ON c.task_id = t.id ORDER BY t.created_at, t.seq",
            list(states),
            owner,
            expires_at,
            now,
            limit,
        )
        return [_task(r) for r in rows]
