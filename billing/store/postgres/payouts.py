"""Payouts on PostgreSQL. Contract: ``PayoutsTx``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple

from ..rows import PayoutRow
from .base import PostgresBase

_COLUMNS = (
    "payment_hash, ref, agent, bolt11, amount_msat, fee_limit_msat, state, created_at, "
    "updated_at, attempted_at, fee_msat, preimage, error"
)


class PostgresPayouts(PostgresBase):
    async def insert_payout(self, payout: PayoutRow) -> bool:
        inserted = await self._run(
            f"INSERT INTO payouts ({_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
            "ON CONFLICT DO NOTHING",
            *astuple(payout),  # the row's fields are in _COLUMNS' order
        )
        return inserted == 1

    async def payout(self, payment_hash: str) -> PayoutRow | None:
        row = await self._one(
            f"SELECT {_COLUMNS} FROM payouts WHERE payment_hash = $1", payment_hash
        )
        return PayoutRow(*row) if row else None

    async def payouts_in_states(self, states: Sequence[str]) -> list[PayoutRow]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM payouts WHERE state = ANY($1::text[]) "
            "ORDER BY created_at, seq",
            list(states),
        )
        return [PayoutRow(*r) for r in rows]

    async def update_payout(self, payout: PayoutRow, *, expected_state: str) -> bool:
        changed = await self._run(
            "UPDATE payouts SET state = $1, updated_at = $2, attempted_at = $3, fee_msat = $4, "
            "preimage = $5, error = $6 WHERE payment_hash = $7 AND state = $8",
            payout.state,
            payout.updated_at,
            payout.attempted_at,
            payout.fee_msat,
            payout.preimage,
            payout.error,
            payout.payment_hash,
            expected_state,
        )
        return changed == 1
