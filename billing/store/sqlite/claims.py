"""Claiming queued work on SQLite: one process, one writer at a time, so a plain select
followed by the leases' compare-and-set. Contract: ``ClaimsTx``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..rows import TaskRow
from .base import SqliteBase


class SqliteClaims(SqliteBase):
    async def claim_tasks(
        self, states: Sequence[str], owner: str, expires_at: float, now: float, limit: int
    ) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._all(
            "SELECT t.id, t.state, t.agent, t.data, t.created_at, t.updated_at FROM tasks t "
            "LEFT JOIN leases l ON l.task_id = t.id "
            f"WHERE t.state IN ({marks}) AND (l.task_id IS NULL OR l.expires_at < ?) "
            "ORDER BY t.created_at LIMIT ?",
            (*states, now, limit),
        )
        self._many(
            "INSERT INTO leases (task_id, owner, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at",
            [(r[0], owner, expires_at) for r in rows],
        )
        return [TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]
