"""Tasks on PostgreSQL (``data`` is JSON text). Contract: ``TasksTx``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from ..rows import TaskRow
from .base import PostgresBase

_COLUMNS = "id, state, agent, data, created_at, updated_at"


def _task(r: asyncpg.Record) -> TaskRow:
    return TaskRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5])


class PostgresTasks(PostgresBase):
    async def insert_task(self, task: TaskRow) -> None:
        await self._run(
            f"INSERT INTO tasks ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
            task.id,
            task.state,
            task.agent,
            json.dumps(task.data),
            task.created_at,
            task.updated_at,
        )

    async def task(self, task_id: str) -> TaskRow | None:
        row = await self._one(f"SELECT {_COLUMNS} FROM tasks WHERE id = $1", task_id)
        return _task(row) if row else None

    async def update_task(
        self,
        task_id: str,
        *,
        state: str,
        data: dict[str, Any],
        expected_state: str,
        now: float,
    ) -> bool:
        changed = await self._run(
            "UPDATE tasks SET state = $1, data = $2, updated_at = $3 WHERE id = $4 AND state = $5",
            state,
            json.dumps(data),
            now,
            task_id,
            expected_state,
        )
        return changed == 1

    async def tasks_in_states(self, states: Sequence[str]) -> list[TaskRow]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM tasks WHERE state = ANY($1::text[]) ORDER BY created_at, seq",
            list(states),
        )
        return [_task(r) for r in rows]

    async def tasks_updated_between(
        self, since: float | None, until: float | None, states: Sequence[str]
    ) -> list[TaskRow]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM tasks WHERE state = ANY($1::text[]) "
            "AND updated_at >= $2 AND updated_at < $3 ORDER BY updated_at, seq",
            list(states),
            since if since is not None else 0.0,
            until if until is not None else float("inf"),
        )
        return [_task(r) for r in rows]
