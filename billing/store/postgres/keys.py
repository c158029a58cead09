"""API accounts, L402 root keys and small values on PostgreSQL. Contract: ``KeysTx``."""

from __future__ import annotations

from .base import PostgresBase


class PostgresKeys(PostgresBase):
    async def insert_api_account(self, account_id: str, key_hash: str, now: float) -> None:
        await self._run(
            "INSERT INTO api_accounts (id, key_hash, created_at) VALUES ($1, $2, $3)",
            account_id,
            key_hash,
            now,
        )

    async def api_account_by_key_hash(self, key_hash: str) -> str | None:
        value = await self._value("SELECT id FROM api_accounts WHERE key_hash = $1", key_hash)
        return str(value) if value is not None else None

    async def put_root_key(self, id_hash: str, root_key: bytes, now: float) -> None:
        await self._run(
            "INSERT INTO l402_root_keys (id_hash, root_key, created_at) VALUES ($1, $2, $3)",
            id_hash,
            root_key,
            now,
        )

    async def root_key(self, id_hash: str) -> bytes | None:
        value = await self._value("SELECT root_key FROM l402_root_keys WHERE id_hash = $1", id_hash)
        return bytes(value) if value is not None else None

    async def get_value(self, key: str) -> str | None:
        value = await self._value("SELECT value FROM kv WHERE key = $1", key)
        return str(value) if value is not None else None

    async def set_value(self, key: str, value: str) -> None:
        await self._run(
            "INSERT INTO kv (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )

    async def delete_value(self, key: str) -> None:
        await self._run("DELETE FROM kv WHERE key = $1", key)
