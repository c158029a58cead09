"""Leases on running work on SQLite. Contract: ``LeasesTx``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..rows import TaskRow
from .base import SqliteBase


class SqliteLeases(SqliteBase):
    async def take_lease(self, task_id: str, owner: str, expires_at: float) -> None:
        self._run(
            "INSERT INTO leases (task_id, owner, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at",
            (task_id, owner, expires_at),
        )

    async def renew_leases(self, owner: str, expires_at: float) -> int:
        return self._run("UPDATE leases SET expires_at = ? WHERE owner = ?", (expires_at, owner))

    async def claim_lease(self, task_id: str, owner: str, expires_at: float, now: float) -> bool:
        changed = self._run(
            "INSERT INTO leases (task_id, owner, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at WHERE leases.expires_at < ?",
            (task_id, owner, expires_at, now),
        )
        return changed == 1

    async def drop_lease(self, task_id: str) -> None:
        self._run("DELETE FROM leases WHERE task_id = ?", (task_id,))

    async def unleased_tasks(self, states: Sequence[str], now: float) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._all(
            "SELECT t.id, t.state, t.agent, t.data, t.created_at, t.updated_at FROM tasks t "
            "LEFT JOIN leases l ON l.task_id = t.id "
            f"WHERE t.state IN ({marks}) AND (l.task_id IS NULL OR l.expires_at < ?) "
            "ORDER BY t.created_at",
            (*states, now),
        )
        return [TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]
