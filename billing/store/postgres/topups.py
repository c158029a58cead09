"""Top-ups on PostgreSQL (``data`` is JSON text). Contract: ``TopupsTx``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..rows import TopupRow
from .base import PostgresBase


class PostgresTopups(PostgresBase):
    async def insert_topup(self, topup: TopupRow) -> None:
        await self._run(
            "INSERT INTO topups (id, state, amount_msat, usd_nusd, data, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            topup.id,
            topup.state,
            topup.amount_msat,
            topup.usd_nusd,
            json.dumps(topup.data),
            topup.created_at,
            topup.updated_at,
        )

    async def update_topup(
        self, topup_id: str, *, state: str, data: dict[str, Any], expected_state: str, now: float
    ) -> bool:
        changed = await self._run(
            "UPDATE topups SET state = $1, data = $2, updated_at = $3 WHERE id = $4 AND state = $5",
            state,
            json.dumps(data),
            now,
            topup_id,
            expected_state,
        )
        return changed == 1

    async def topups(
        self, states: Sequence[str] | None = None, since: float | None = None
    ) -> list[TopupRow]:
        rows = await self._all(
            "SELECT id, state, amount_msat, usd_nusd, data, created_at, updated_at FROM topups "
            "WHERE created_at >= $1 AND ($2::text[] IS NULL OR state = ANY($2::text[])) "
            "ORDER BY created_at, seq",
            since if since is not None else 0.0,
            list(states) if states is not None else None,
        )
        return [TopupRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]
