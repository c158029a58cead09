"""Tasks on SQLite (``data`` is a JSON column). Contract: ``TasksTx``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..rows import TaskRow
from .base import SqliteBase


class SqliteTasks(SqliteBase):
    async def insert_task(self, task: TaskRow) -> None:
        self._run(
            "INSERT INTO tasks (id, state, agent, data, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                task.id,
                task.state,
                task.agent,
                json.dumps(task.data),
                task.created_at,
                task.updated_at,
            ),
        )

    async def task(self, task_id: str) -> TaskRow | None:
        row = self._one(
            "SELECT id, state, agent, data, created_at, updated_at FROM tasks WHERE id = ?",
            (task_id,),
        )
        return TaskRow(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5]) if row else None

    async def update_task(
        self,
        task_id: str,
        *,
        state: str,
        data: dict[str, Any],
        expected_state: str,
        now: float,
    ) -> bool:
        changed = self._run(
            "UPDATE tasks SET state = ?, data = ?, updated_at = ? WHERE id = ? AND state = ?",
            (state, json.dumps(data), now, task_id, expected_state),
        )
        return changed == 1

    async def tasks_in_states(self, states: Sequence[str]) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._all(
            "SELECT id, state, agent, data, created_at, updated_at FROM tasks "
            f"WHERE state IN ({marks}) ORDER BY created_at",
            tuple(states),
        )
        return [TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    async def tasks_updated_between(
        self, since: float | None, until: float | None, states: Sequence[str]
    ) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._all(
            "SELECT id, state, agent, data, created_at, updated_at FROM tasks "
            f"WHERE state IN ({marks}) AND updated_at >= ? AND updated_at < ? "
            "ORDER BY updated_at",
            (
                *states,
                since if since is not None else 0.0,
                until if until is not None else float("inf"),
            ),
        )
        return [TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]
