"""The audit trail on PostgreSQL. Contract: ``AuditTx``."""

from __future__ import annotations

from .base import PostgresBase


class PostgresAudit(PostgresBase):
    async def audit_tail(self) -> tuple[int, str] | None:
        row = await self._one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), str(row[1])) if row else None

    async def insert_audit(
        self, seq: int, at: float, kind: str, data: str, prev_hash: str, digest: str
    ) -> None:
        await self._run(
            "INSERT INTO audit (seq, at, kind, data, prev_hash, hash) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            seq,
            at,
            kind,
            data,
            prev_hash,
            digest,
        )

    async def audit_after(
        self, seq: int, limit: int
    ) -> list[tuple[int, float, str, str, str, str]]:
        rows = await self._all(
            "SELECT seq, at, kind, data, prev_hash, hash FROM audit WHERE seq > $1 "
            "ORDER BY seq LIMIT $2",
            seq,
            limit,
        )
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
