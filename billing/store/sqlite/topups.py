"""Top-ups on SQLite (``data`` is a JSON column). Contract: ``TopupsTx``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..rows import TopupRow
from .base import SqliteBase


class SqliteTopups(SqliteBase):
    async def insert_topup(self, topup: TopupRow) -> None:
        self._run(
            "INSERT INTO topups (id, state, amount_msat, usd_nusd, data, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                topup.id,
                topup.state,
                topup.amount_msat,
                topup.usd_nusd,
                json.dumps(topup.data),
                topup.created_at,
                topup.updated_at,
            ),
        )

    async def update_topup(
        self, topup_id: str, *, state: str, data: dict[str, Any], expected_state: str, now: float
    ) -> bool:
        return (
            self._run(
                "UPDATE topups SET state = ?, data = ?, updated_at = ? WHERE id = ? AND state = ?",
                (state, json.dumps(data), now, topup_id, expected_state),
            )
            == 1
        )

    async def topups(
        self, states: Sequence[str] | None = None, since: float | None = None
    ) -> list[TopupRow]:
        sql = "SELECT id, state, amount_msat, usd_nusd, data, created_at, updated_at FROM topups"
        where = ["created_at >= ?"]
        params: list[object] = [since if since is not None else 0.0]
        if states is not None:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        rows = self._all(f"{sql} WHERE {' AND '.join(where)} ORDER BY created_at", params)
        return [TopupRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]
