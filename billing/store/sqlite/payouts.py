"""Payouts on SQLite. Contract: ``PayoutsTx``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from ..rows import PayoutRow
from .base import SqliteBase


class SqlitePayouts(SqliteBase):
    _PAYOUT_COLUMNS = (
        "payment_hash, ref, agent, bolt11, amount_msat, fee_limit_msat, state, created_at, "
        "updated_at, attempted_at, fee_msat, preimage, error"
    )

    async def insert_payout(self, payout: PayoutRow) -> bool:
        return (
            self._run(
                f"INSERT INTO payouts ({self._PAYOUT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                _payout_values(payout),
            )
            == 1
        )

    async def payout(self, payment_hash: str) -> PayoutRow | None:
        row = self._one(
            f"SELECT {self._PAYOUT_COLUMNS} FROM payouts WHERE payment_hash = ?", (payment_hash,)
        )
        return PayoutRow(*row) if row else None

    async def payouts_in_states(self, states: Sequence[str]) -> list[PayoutRow]:
        rows = self._all(
            f"SELECT {self._PAYOUT_COLUMNS} FROM payouts "
            f"WHERE state IN ({','.join('?' * len(states))}) ORDER BY created_at",
            list(states),
        )
        return [PayoutRow(*r) for r in rows]

    async def update_payout(self, payout: PayoutRow, *, expected_state: str) -> bool:
        return (
            self._run(
                "UPDATE payouts SET state = ?, updated_at = ?, attempted_at = ?, fee_msat = ?, "
                "preimage = ?, error = ? WHERE payment_hash = ? AND state = ?",
                (
                    payout.state,
                    payout.updated_at,
                    payout.attempted_at,
                    payout.fee_msat,
                    payout.preimage,
                    payout.error,
                    payout.payment_hash,
                    expected_state,
                ),
            )
            == 1
        )


def _payout_values(p: PayoutRow) -> tuple[Any, ...]:
    return astuple(p)  # the row's fields are in the table's column order
